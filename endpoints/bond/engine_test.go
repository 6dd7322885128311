package bond

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunbond/tunbond/tunnel/conn/conntest"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/reorder"
)

type enginePair struct {
	a, b         *Engine
	ta, tb       *tuntest.ChannelTUN
	upA, upB     []*conntest.ChannelUplink
	names        []string
	aAddr, bAddr netip.Addr
}

func newEnginePair(t *testing.T, enc encap.Encapsulation, sched string, weights ...uint32) *enginePair {
	t.Helper()
	return newEnginePairKeepalive(t, enc, sched, 50*time.Millisecond, weights...)
}

// newEnginePairKeepalive is newEnginePair with another keepalive interval.
func newEnginePairKeepalive(t *testing.T, enc encap.Encapsulation, sched string, keepalive time.Duration, weights ...uint32) *enginePair {
	t.Helper()
	return newEnginePairWith(t, enc, sched, keepalive, nil, weights...)
}

// newEnginePairWith is newEnginePairKeepalive with both engines' configs
// changed by with (nil: none).
func newEnginePairWith(t *testing.T, enc encap.Encapsulation, sched string, keepalive time.Duration, with func(*EngineConfig), weights ...uint32) *enginePair {
	t.Helper()
	ep := &enginePair{ta: tuntest.NewChannelTUN(), tb: tuntest.NewChannelTUN(),
		aAddr: netip.MustParseAddr("10.77.0.1"), bAddr: netip.MustParseAddr("10.77.0.2")}
	var pa, pb []EnginePath
	for i, w := range weights {
		la := netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)})
		lb := netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})
		ua, ub := conntest.Pair(la, lb, enc.Protocols())
		name := fmt.Sprintf("p%d", i)
		ep.names = append(ep.names, name)
		ep.upA, ep.upB = append(ep.upA, ua), append(ep.upB, ub)
		pa = append(pa, EnginePath{Name: name, Weight: w, Local: la, Remote: lb, Uplink: ua})
		pb = append(pb, EnginePath{Name: name, Weight: w, Local: lb, Remote: la, Uplink: ub})
	}
	mk := func(paths []EnginePath, dev *tuntest.ChannelTUN) *Engine {
		cfg := EngineConfig{
			Encap: enc, Scheduler: sched,
			Reorder:   reorder.Config{Window: 1024, Timeout: 500 * time.Millisecond},
			Keepalive: keepalive, Misses: 3, MTU: 1420, Paths: paths, Repair: true, // the repair tests need it; off, nothing asks
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		if with != nil {
			with(&cfg)
		}
		e, err := NewEngine(cfg, dev.TUN())
		if err != nil {
			t.Fatal(err)
		}
		e.Start()
		t.Cleanup(func() { e.Close() })
		return e
	}
	ep.a, ep.b = mk(pa, ep.ta), mk(pb, ep.tb)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range ep.names {
		for _, e := range []*Engine{ep.a, ep.b} {
			if err := e.WaitPath(ctx, n, true); err != nil {
				t.Fatal(err)
			}
		}
	}
	return ep
}

// send pushes n pings through A and checks B receives them all, in order.
// At most 128 are in flight, as a transport's window would keep them: the
// fake links have no pacing, and an unbounded burst would rightly overflow
// the reorder window.
func (ep *enginePair) send(t *testing.T, n int) {
	t.Helper()
	done := make(chan error, 1)
	inflight := make(chan struct{}, 128)
	go func() {
		for i := 0; i < n; i++ {
			inflight <- struct{}{}
			p := tuntest.Ping(ep.bAddr, ep.aAddr)
			p[len(p)-1] = byte(i) // payload marks the order
			p[len(p)-2] = byte(i >> 8)
			ep.ta.Outbound <- p
		}
		done <- nil
	}()
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case got := <-ep.tb.Inbound:
			<-inflight
			if k := int(got[len(got)-1]) | int(got[len(got)-2])<<8; k != i&0xffff {
				t.Fatalf("packet %d arrived as number %d; A %+v; B late %d dup %d holes %d resync %d lost/timeout/overflow %d/%d/%d", k, i, ep.a.Status(), ep.b.ReorderStats().Late.Load(), ep.b.ReorderStats().Duplicate.Load(), ep.b.ReorderStats().Holes.Load(), ep.b.ReorderStats().Resync.Load(), ep.b.ReorderStats().HolesLost.Load(), ep.b.ReorderStats().HolesTimeout.Load(), ep.b.ReorderStats().HolesOverflow.Load())
			}
			want := tuntest.Ping(ep.bAddr, ep.aAddr)
			if !bytes.Equal(got[:len(got)-2], want[:len(want)-2]) {
				t.Fatalf("packet changed in transit")
			}
		case <-timeout:
			t.Fatalf("received %d of %d packets", i, n)
		}
	}
	<-done
}

func TestEngineForwardsInOrderOverPaths(t *testing.T) {
	for _, sched := range []string{"rr", "wrr", "flowhash"} {
		t.Run(sched, func(t *testing.T) {
			ep := newEnginePair(t, encap.GRE{Key: 7}, sched, 3, 1)
			ep.send(t, 2000)
			st := ep.a.Status()
			if sched != "flowhash" && (st[0].TxPackets == 0 || st[1].TxPackets == 0) {
				t.Fatalf("a path carried nothing: %+v", st)
			}
			if late := ep.b.ReorderStats().Late.Load(); late != 0 {
				t.Fatalf("%d late packets on lossless paths", late)
			}
		})
	}
}

func TestEngineIPIP(t *testing.T) {
	ep := newEnginePair(t, encap.IPIP{}, "flowhash", 1, 1)
	ep.send(t, 500)
	if ep.b.ReorderStats() != nil {
		t.Fatal("IPIP bond has a reorder buffer")
	}
}

func TestEnginePathDownAndBack(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.upA[1].Down.Store(true)
	ep.upB[1].Down.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	if err := ep.a.WaitPath(ctx, "p1", false); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("down detected after %v; keepalive 50ms × 3 misses", took)
	}
	before := ep.a.Status()[1].TxPackets
	ep.send(t, 300)
	if after := ep.a.Status()[1].TxPackets; after != before {
		t.Fatalf("down path still scheduled: %d → %d", before, after)
	}
	ep.upA[1].Down.Store(false)
	ep.upB[1].Down.Store(false)
	if err := ep.a.WaitPath(ctx, "p1", true); err != nil {
		t.Fatal(err)
	}
	ep.send(t, 300)
	if ep.a.Status()[1].TxPackets == before {
		t.Fatal("recovered path not used")
	}
}

func TestEngineCountsAndDropsForeignPackets(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1)
	wrongKey := encap.GRE{Key: 8}
	buf := make([]byte, 256)
	inner := tuntest.Ping(ep.bAddr, ep.aAddr)
	copy(buf[encap.Headroom:], inner)
	pkt := wrongKey.EncapData(buf, encap.Headroom, len(inner), 1)
	junk := []byte{0xff, 0xff, 0, 0}
	if _, err := ep.upA[0].Send([][]byte{pkt, junk}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for ep.b.paths[0].decode[header.ErrWrongKey].Load() != 1 || ep.b.paths[0].decode[header.ErrGREVersion].Load() != 1 {
		select {
		case <-ctx.Done():
			t.Fatalf("drops not counted: wrong key %d, bad version %d", ep.b.paths[0].decode[header.ErrWrongKey].Load(), ep.b.paths[0].decode[header.ErrGREVersion].Load())
		case <-time.After(time.Millisecond):
		}
	}
	ep.send(t, 10) // still forwarding
}

func TestEngineRuntimeWeight(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "wrr", 1, 1)
	if err := ep.a.SetWeight("p1", 0); err != nil {
		t.Fatal(err)
	}
	before := ep.a.Status()[1].TxPackets
	ep.send(t, 200)
	if ep.a.Status()[1].TxPackets != before {
		t.Fatal("weight 0 path carried data")
	}
	if ep.a.SetWeight("nope", 1) == nil {
		t.Fatal("unknown path accepted")
	}
}

func TestEngineMetrics(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.send(t, 100)
	// The fake TUN hands each packet over as it is written; the engine
	// counts a write batch once Write returns: await the count.
	deadline := time.Now().Add(5 * time.Second)
	for ep.b.Stats.TUNTxPackets.Load() < 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(ep.b.Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				found[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				found[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				found[key] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	rx := found["tunbond_path_rx_packets_total,p0"] + found["tunbond_path_rx_packets_total,p1"]
	if rx != 100 || found["tunbond_tun_tx_packets_total"] != 100 || found["tunbond_reorder_wait_seconds"] != 100 {
		t.Fatalf("rx %v, tun tx %v, wait samples %v", rx, found["tunbond_tun_tx_packets_total"], found["tunbond_reorder_wait_seconds"])
	}
	if found["tunbond_path_up,p0"] != 1 {
		t.Fatal("path_up missing")
	}
	if _, ok := found["tunbond_rx_dropped_total,p0,wrong_key"]; !ok {
		t.Fatal("drop reasons missing")
	}
}
