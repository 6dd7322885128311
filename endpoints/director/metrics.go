package director

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("tunbond_director_"+name, help, labels, nil)
}

var (
	dSvcConns    = desc("service_connections_total", "Connections scheduled.", "service")
	dSvcPackets  = desc("service_in_packets_total", "Packets from clients.", "service")
	dSvcBytes    = desc("service_in_bytes_total", "Bytes from clients.", "service")
	dRealConns   = desc("real_connections_total", "Connections scheduled to the real server.", "service", "real")
	dRealPackets = desc("real_in_packets_total", "Packets forwarded to the real server.", "service", "real")
	dRealBytes   = desc("real_in_bytes_total", "Bytes forwarded to the real server.", "service", "real")
	dRealActive  = desc("real_active_connections", "Established connections.", "service", "real")
	dRealInact   = desc("real_inactive_connections", "Other connections.", "service", "real")
	dRealUp      = desc("real_up", "1 if the real server passes its health checks.", "service", "real")
	dRealWeight  = desc("real_weight", "Weight.", "service", "real")
	dRealCheck   = desc("real_check_seconds", "Latency of the last health check.", "service", "real")
	dTableSize   = desc("connections", "Connections in the table.")
	dTableEvents = desc("table_events_total", "Connection table events: created, expired, evicted (table full), refused (full of active), reused (a SYN on a closing connection).", "event")
	dDrops       = desc("dropped_total", "Client packets not forwarded, by reason (frag_needed: answered with ICMP for PMTU).", "reason")
)

// Collector exports the director's state at scrape time.
type Collector struct{ D *Director }

func (c Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dSvcConns, dSvcPackets, dSvcBytes, dRealConns, dRealPackets, dRealBytes,
		dRealActive, dRealInact, dRealUp, dRealWeight, dRealCheck, dTableSize, dTableEvents, dDrops} {
		ch <- d
	}
}

func (c Collector) Collect(ch chan<- prometheus.Metric) {
	d := c.D
	d.mu.Lock()
	defer d.mu.Unlock()
	counter := func(ds *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(ds, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(ds *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(ds, prometheus.GaugeValue, v, l...)
	}
	for _, st := range d.svcs {
		svc := fmt.Sprintf("%s %s", protoName(st.svc.Proto), st.svc.VIP)
		counter(dSvcConns, st.conns, svc)
		counter(dSvcPackets, st.packets, svc)
		counter(dSvcBytes, st.bytes, svc)
		for _, x := range st.reals {
			r := x.addr.String()
			counter(dRealConns, x.conns, svc, r)
			counter(dRealPackets, x.packets, svc, r)
			counter(dRealBytes, x.bytes, svc, r)
			gauge(dRealActive, float64(x.dest.Active), svc, r)
			gauge(dRealInact, float64(x.dest.Inactive), svc, r)
			up := 0.0
			if x.dest.Up {
				up = 1
			}
			gauge(dRealUp, up, svc, r)
			gauge(dRealWeight, float64(x.dest.Weight), svc, r)
			gauge(dRealCheck, x.check.Seconds(), svc, r)
		}
	}
	gauge(dTableSize, float64(d.table.Len()))
	s := d.table.Stats
	for ev, v := range map[string]uint64{"created": s.Created, "expired": s.Expired, "refused": s.Refused, "reused": s.Reused,
		"evicted_unconfirmed": s.Evicted[EvictUnconfirmed], "evicted_inactive": s.Evicted[EvictInactive], "evicted_idle": s.Evicted[EvictIdle]} {
		counter(dTableEvents, v, ev)
	}
	for r := Drop(0); r < NumDrops; r++ {
		counter(dDrops, d.drops[r], r.String())
	}
}

// Registry returns a registry with the director's metrics and Go's.
func (d *Director) Registry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(Collector{d}, collectors.NewGoCollector())
	return r
}

var (
	dRunTUN      = desc("tun_rx_packets_total", "Client packets read from the ingress (the TUN, or the ring with ingress: ring).")
	dRingTrunc   = desc("ring_truncated_total", "Packets larger than a ring frame, dropped (ingress: ring; GRO or jumbo frames on the interface).")
	dRingDropped = desc("ring_dropped_total", "Packets the kernel dropped because the ingress ring was full (ingress: ring).")
	dRunSent     = desc("tx_packets_total", "Packets sent to the real servers.")
	dRunICMP     = desc("icmp_sent_total", "ICMP errors written back to the clients (PMTU).")
	dRunErrors   = desc("tx_errors_total", "Packets the raw socket refused (no route to a real server).")
	dRunSegments = desc("tun_too_many_segments_total", "TUN reads that could not split a GSO packet into all its segments (the segments read were forwarded, the rest lost).")
)

// dataPath exports a running director's data-path counters; Start
// registers it beside the Director's Collector.
type dataPath struct{ r *Running }

func (c dataPath) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dRunTUN, dRunSent, dRunICMP, dRunErrors, dRunSegments, dRingTrunc, dRingDropped} {
		ch <- d
	}
}

func (c dataPath) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	for _, m := range []struct {
		d *prometheus.Desc
		v uint64
	}{{dRunTUN, r.RxPackets.Load()}, {dRunSent, r.TxPackets.Load()}, {dRunICMP, r.Replies.Load()},
		{dRunErrors, r.SendErrors.Load()}, {dRunSegments, r.SegmentErrors.Load()}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v))
	}
	if r.ring != nil {
		tr, dr := r.ring.Stats()
		ch <- prometheus.MustNewConstMetric(dRingTrunc, prometheus.CounterValue, float64(tr))
		ch <- prometheus.MustNewConstMetric(dRingDropped, prometheus.CounterValue, float64(dr))
	}
}
