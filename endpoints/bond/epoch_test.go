package bond

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/endpoints/role/roletest"
	"github.com/tunbond/tunbond/reorder"
	"github.com/tunbond/tunbond/tunnel/conn/conntest"
	"github.com/tunbond/tunbond/tunnel/encap"
)

// keepOpen is an uplink that outlives its engine, as a host's link does when
// the tunbond on it restarts: Close leaves the fake pair open for the next.
type keepOpen struct{ *conntest.ChannelUplink }

func (keepOpen) Close() error { return nil }

// startEngine runs an engine over the uplinks (kept open across its Close,
// closed at the end of the test).
func startEngine(t *testing.T, ups []*conntest.ChannelUplink, local, remote func(int) netip.Addr, dev *tuntest.ChannelTUN, epoch uint64, firstSeq uint32, log *roletest.Log) *Engine {
	t.Helper()
	var paths []EnginePath
	for i, u := range ups {
		paths = append(paths, EnginePath{Name: fmt.Sprintf("p%d", i), Weight: 1, Local: local(i), Remote: remote(i), Uplink: keepOpen{u}})
	}
	e, err := NewEngine(EngineConfig{
		Encap: encap.GRE{Key: 7}, Scheduler: "rr",
		Reorder:   reorder.Config{Window: 1024, Timeout: 500 * time.Millisecond},
		Keepalive: 50 * time.Millisecond, Misses: 3, MTU: 1420, Paths: paths,
		Log: log.Logger(), Epoch: epoch, firstSeq: firstSeq,
	}, dev.TUN())
	if err != nil {
		t.Fatal(err)
	}
	e.Start()
	t.Cleanup(func() {
		for _, u := range ups { // the test is over: the links go too, so the loops end
			u.Close()
		}
		e.Close()
	})
	return e
}

func waitPaths(t *testing.T, ctx context.Context, es ...*Engine) {
	t.Helper()
	for _, e := range es {
		for _, p := range e.paths {
			if err := e.WaitPath(ctx, p.Name, true); err != nil {
				t.Fatalf("path %s not up: %v", p.Name, err)
			}
		}
	}
}

// flow sends n pings from one TUN to the other and checks they all arrive,
// in order; the first by first (if not zero).
func flow(t *testing.T, from, to *tuntest.ChannelTUN, src, dst netip.Addr, n int, first time.Time) {
	t.Helper()
	inflight := make(chan struct{}, 128)
	go func() {
		for i := 0; i < n; i++ {
			inflight <- struct{}{}
			p := tuntest.Ping(dst, src)
			p[len(p)-1], p[len(p)-2] = byte(i), byte(i>>8)
			from.Outbound <- p
		}
	}()
	timeout := time.After(10 * time.Second)
	var firstBy <-chan time.Time
	if !first.IsZero() {
		firstBy = time.After(time.Until(first))
	}
	for i := 0; i < n; i++ {
		select {
		case got := <-to.Inbound:
			<-inflight
			firstBy = nil
			if k := int(got[len(got)-1]) | int(got[len(got)-2])<<8; k != i {
				t.Fatalf("packet %d arrived as number %d", k, i)
			}
		case <-firstBy:
			t.Fatal("no packet delivered in time after the restart")
		case <-timeout:
			t.Fatalf("received %d of %d packets", i, n)
		}
	}
}

// TestEnginePeerRestartRecognisedByEpoch: B stops and a new B, with a new
// epoch and a sequence a quarter of the space away, starts on the same
// links. A recognises the restart by the epoch (logged once, counted),
// resets its reorder buffer, and B's traffic reaches A's TUN again within a
// second, with no hole, resync or out-of-window count (today: ~2^30 holes
// of reason overflow).
func TestEnginePeerRestartRecognisedByEpoch(t *testing.T) {
	aAddr, bAddr := netip.MustParseAddr("10.77.0.1"), netip.MustParseAddr("10.77.0.2")
	la := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}) }
	lb := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}) }
	var upA, upB []*conntest.ChannelUplink
	for i := 0; i < 2; i++ {
		ua, ub := conntest.Pair(la(i), lb(i), encap.GRE{}.Protocols())
		upA, upB = append(upA, ua), append(upB, ub)
	}
	logA := &roletest.Log{}
	ta, tb := tuntest.NewChannelTUN(), tuntest.NewChannelTUN()
	a := startEngine(t, upA, la, lb, ta, 0xaaaa, 0, logA)
	b := startEngine(t, upB, lb, la, tb, 0xb1, 1000, &roletest.Log{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	waitPaths(t, ctx, a, b)
	flow(t, tb, ta, bAddr, aAddr, 300, time.Time{})
	if got := a.peerEpoch.Load(); got != 0xb1 {
		t.Fatalf("A holds peer epoch %#x, want 0xb1", got)
	}
	if b.peerEpoch.Load() != 0xaaaa {
		t.Fatalf("B holds peer epoch %#x", b.peerEpoch.Load())
	}
	s := a.ReorderStats()
	holes0 := s.Holes.Load()

	b.Close()
	tb2 := tuntest.NewChannelTUN()
	// Awaited from before the new B starts: its first keepalive may reach A
	// (and A log the restart) before startEngine returns.
	restarted := logA.Seen("peer restarted")
	start := time.Now()
	b2 := startEngine(t, upB, lb, la, tb2, 0xb2, 1000+1<<30, &roletest.Log{})
	ctx1, cancel1 := context.WithDeadline(context.Background(), start.Add(time.Second))
	defer cancel1()
	waitPaths(t, ctx1, b2)
	flow(t, tb2, ta, bAddr, aAddr, 300, start.Add(time.Second))
	select {
	case <-restarted:
	case <-ctx.Done():
		t.Fatalf("no restart logged; holes overflow %d, resync %d", a.ReorderStats().HolesOverflow.Load(), a.ReorderStats().Resync.Load())
	}
	if n := strings.Count(logA.String(), "peer restarted"); n != 1 || !strings.Contains(logA.String(), "old_epoch=00000000000000b1 new_epoch=00000000000000b2") {
		t.Fatalf("%d restart lines:\n%s", n, logA.String())
	}
	if n := a.Stats.PeerRestarts.Load(); n != 1 {
		t.Fatalf("%d peer restarts counted, want 1", n)
	}
	if d := s.Holes.Load() - holes0; d != 0 || s.Resync.Load() != 0 || s.OutOfWindow.Load() != 0 || s.Late.Load() != 0 {
		t.Fatalf("after the restart: holes +%d (overflow %d), resync %d, out of window %d, late %d",
			d, s.HolesOverflow.Load(), s.Resync.Load(), s.OutOfWindow.Load(), s.Late.Load())
	}
	// And the other way: the new B takes A's stream from where it is.
	flow(t, ta, tb2, aAddr, bAddr, 100, time.Time{})
}

// TestEngineForgedSequencesDoNotStall: two data packets with the right key
// and source but a sequence beyond the window and a quarter of the
// space ahead are dropped and counted; the real stream behind them reaches
// the TUN in order with nothing skipped or late (today the first skips a
// real packet and the second releases itself after ~2^30 holes).
func TestEngineForgedSequencesDoNotStall(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.send(t, 100)
	s := ep.b.ReorderStats()
	holes0, late0 := s.Holes.Load(), s.Late.Load()
	base := ep.a.sentUpTo.Load()
	// A's published sequence may lag what its sockets sent by a batch (it is
	// stored after the batch is sent), so "beyond the window" is taken with
	// a batch to spare.
	for _, seq := range []uint32{base + 1024 + 64 + 1, base + 1<<30} {
		inner := tuntest.Ping(ep.bAddr, ep.aAddr)
		inner[len(inner)-1], inner[len(inner)-2] = 0xee, 0xee // no real packet's mark
		buf := make([]byte, 256)
		copy(buf[encap.Headroom:], inner)
		pkt := encap.GRE{Key: 7}.EncapData(buf, encap.Headroom, len(inner), seq)
		if _, err := ep.upA[0].Send([][]byte{pkt}); err != nil {
			t.Fatal(err)
		}
	}
	ep.send(t, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s.OutOfWindow.Load() < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("%d out of window counted, want 2", s.OutOfWindow.Load())
		case <-time.After(time.Millisecond):
		}
	}
	if d, l := s.Holes.Load()-holes0, s.Late.Load()-late0; d != 0 || l != 0 || s.OutOfWindow.Load() != 2 || s.Resync.Load() != 0 {
		t.Fatalf("holes +%d, late +%d, out of window %d, resync %d", d, l, s.OutOfWindow.Load(), s.Resync.Load())
	}
}
