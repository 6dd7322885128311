// Package realserver is the real-server agent of director mode: it takes
// the clients' packets out of the directors' tunnels in user space and
// hands them to the local services on a TUN that holds the VIPs; replies
// leave by the normal route, from the VIP, straight to the client.
package realserver

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// Config is the agent's setup.
type Config struct {
	TUN       string       // the TUN that holds the VIPs
	Local     netip.Addr   // the address the directors send to
	Directors []netip.Addr // the only sources accepted
	VIPs      []netip.Addr // put on the TUN (/32)
	Encap     encap.Encapsulation
}

// Agent is a running real-server agent.
type Agent struct {
	cfg       Config
	host      *host.Netlink
	log       *slog.Logger
	dev       tun.Device
	up        *conn.RawUplink
	directors map[netip.Addr]bool
	wg        sync.WaitGroup
	closed    atomic.Bool
	wmu       sync.Mutex

	Received atomic.Uint64                         // packets handed to the TUN
	Dropped  [header.NumDecodeErrors]atomic.Uint64 // by reason
}

// Start sets the host up (TUN with the VIPs, rp_filter) and runs the agent.
func Start(cfg Config, host *host.Netlink, log *slog.Logger) (_ *Agent, err error) {
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Directors) == 0 {
		return nil, errors.New("realserver: no director addresses: packets are accepted only from them")
	}
	a := &Agent{cfg: cfg, host: host, log: log, directors: map[netip.Addr]bool{}}
	for _, d := range cfg.Directors {
		a.directors[d] = true
	}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if err := host.Do(func() (err error) {
		a.up, err = conn.OpenRaw(conn.RawConfig{Local: cfg.Local, Protocols: cfg.Encap.Protocols()})
		return
	}); err != nil {
		return nil, err
	}
	if err := host.Do(func() (err error) { a.dev, err = tun.CreateTUN(cfg.TUN, 1500); return }); err != nil {
		return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
	}
	l, err := host.Handle().LinkByName(cfg.TUN)
	if err != nil {
		return nil, err
	}
	for _, v := range cfg.VIPs {
		addr, _ := netlink.ParseAddr(netip.PrefixFrom(v, v.BitLen()).String())
		if err := host.Handle().AddrReplace(l, addr); err != nil {
			return nil, fmt.Errorf("VIP %v on %s: %w", v, cfg.TUN, err)
		}
	}
	if err := host.Handle().LinkSetUp(l); err != nil {
		return nil, err
	}
	// The clients' packets arrive on the TUN, their replies leave by the
	// default route: strict reverse-path filtering would drop them.
	if err := host.Do(func() error {
		for _, dev := range []string{"all", cfg.TUN} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/rp_filter", []byte("0"), 0o644); err != nil {
				return fmt.Errorf("rp_filter on %s: %w", dev, err)
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, recv := range a.up.Receivers() {
		a.wg.Add(1)
		go a.rxLoop(recv)
	}
	go func() {
		for range a.dev.Events() {
		}
	}()
	return a, nil
}

// rxLoop decapsulates what the directors send and writes it to the TUN.
func (a *Agent) rxLoop(recv conn.ReceiveFunc) {
	defer a.wg.Done()
	bs := a.up.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	out := make([][]byte, 0, bs)
	for {
		n, err := recv(bufs, sizes)
		if err != nil {
			if a.closed.Load() {
				return
			}
			continue
		}
		out = out[:0]
		for i := 0; i < n; i++ {
			pkt := bufs[i][:sizes[i]]
			if sizes[i] == 0 {
				a.Dropped[header.ErrTruncated].Add(1)
				continue
			}
			ip := header.IPv4(pkt)
			if ip.Validate() != nil {
				a.Dropped[header.ErrTooShort].Add(1)
				continue
			}
			src := ip.Src()
			if !a.directors[src] {
				a.Dropped[header.ErrWrongSource].Add(1)
				continue
			}
			d, err := a.cfg.Encap.Decap(pkt, src.As4())
			if err != nil || d.Kind != encap.KindData && d.Kind != encap.KindControl {
				var de header.DecodeError
				if errors.As(err, &de) {
					a.Dropped[de].Add(1)
				}
				continue
			}
			if d.Kind == encap.KindControl {
				continue
			}
			// In place: the inner packet starts at least 20 bytes in (the
			// outer header), room for the 16 the TUN write wants in front,
			// and the rest of the 64 KiB buffer lets GRO coalesce into it.
			out = append(out, bufs[i][d.Off-16:d.Off+d.Len])
		}
		if len(out) > 0 {
			a.wmu.Lock()
			if _, err := a.dev.Write(out, 16); err == nil {
				a.Received.Add(uint64(len(out)))
			}
			a.wmu.Unlock()
		}
	}
}

// Close stops the agent; closing the TUN removes it and its VIPs.
func (a *Agent) Close() error {
	if !a.closed.CompareAndSwap(false, true) {
		return nil
	}
	if a.up != nil {
		a.up.Close()
	}
	if a.dev != nil {
		a.dev.Close()
	}
	a.wg.Wait()
	return nil
}

var (
	dReceived = prometheus.NewDesc("tunbond_realserver_received_packets_total", "Packets taken out of the directors' tunnels and handed to the TUN.", nil, nil)
	dDropped  = prometheus.NewDesc("tunbond_realserver_dropped_total", "Received packets dropped, by reason (wrong_source: not from a configured director).", []string{"reason"}, nil)
)

// Describe and Collect export the agent's counters.
func (a *Agent) Describe(ch chan<- *prometheus.Desc) { ch <- dReceived; ch <- dDropped }

func (a *Agent) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(dReceived, prometheus.CounterValue, float64(a.Received.Load()))
	for r := header.DecodeError(1); r < header.NumDecodeErrors; r++ {
		ch <- prometheus.MustNewConstMetric(dDropped, prometheus.CounterValue, float64(a.Dropped[r].Load()), r.Reason())
	}
}
