package bond

import (
	"bytes"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/tunnel/encap"
)

// TestEngineRepairsLosses: a path that loses every 7th packet A sends on
// it: A learns the path's loss and offers repair; B then asks again for
// what every path moved past, A sends it again from the path's resend ring,
// and every ping reaches B (in order where the repair came within its
// wait; a later one is handed on out of order). Over clean paths the
// offer made at start ends.
func TestEngineRepairsLosses(t *testing.T) {
	t.Run("plain", func(t *testing.T) { testEngineRepairsLosses(t, nil) })
	// Sealed, a re-sent packet is sealed again under a new counter (its
	// first may have fallen behind the peer's replay window by then): the
	// repairs must still open.
	t.Run("encrypted", func(t *testing.T) { testEngineRepairsLosses(t, withAuth(true)) })
}

func testEngineRepairsLosses(t *testing.T, with func(*EngineConfig)) {
	ep := newEnginePairWith(t, encap.GRE{Key: 7}, "rr", 50*time.Millisecond, with, 1, 1)
	// At start repair is offered until a path shows itself clean.
	ep.send(t, 1000)
	await(t, "clean paths ending the start's offer", func() bool {
		return !ep.a.offerRepair.Load() && !ep.b.repairAsking()
	})
	ep.upA[1].DropEvery.Store(7)
	stop := make(chan struct{})
	go func() { // until B asks: lossy traffic, for A to learn the loss
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case ep.ta.Outbound <- tuntest.Ping(ep.bAddr, ep.aAddr):
			}
			if i%32 == 31 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	drain, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-ep.tb.Inbound:
			case <-drain:
				return
			}
		}
	}()
	await(t, "A offering repair and B asking", func() bool { return ep.a.offerRepair.Load() && ep.b.repairAsking() })
	close(stop)
	close(drain)
	<-drained // the pings below are marked: what still comes of these is ignored

	const n = 1000
	go func() {
		for i := 0; i < n; i++ {
			p := tuntest.Ping(ep.bAddr, ep.aAddr)
			p[len(p)-1], p[len(p)-2], p[len(p)-3] = byte(i), byte(i>>8), 0xa5
			ep.ta.Outbound <- p
			if i%32 == 31 {
				time.Sleep(time.Millisecond) // a transport's pace: the reorder window is not overrun
			}
		}
	}()
	seen := map[int]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < n {
		select {
		case got := <-ep.tb.Inbound:
			if got[len(got)-3] == 0xa5 {
				seen[int(got[len(got)-1])|int(got[len(got)-2])<<8] = true
			}
		case <-timeout:
			t.Fatalf("%d of %d pings reached B; A repaired %d, B asked %d", len(seen), n,
				ep.a.Stats.Repaired.Load(), ep.b.Stats.RepairAsked.Load())
		}
	}
	if ep.a.Stats.Repaired.Load() == 0 || ep.b.Stats.RepairAsked.Load() == 0 || ep.a.paths[1].repaired.Load() == 0 {
		t.Fatalf("everything arrived, yet A repaired %d (path p1: %d) and B asked %d",
			ep.a.Stats.Repaired.Load(), ep.a.paths[1].repaired.Load(), ep.b.Stats.RepairAsked.Load())
	}
}

// TestResendRingFind: a kept packet is found by its sequence while its
// bytes are intact; sequences of other paths, and written-over ones, are
// not.
func TestResendRingFind(t *testing.T) {
	r := newResendRing()
	if _, _, ok := r.find(1); ok {
		t.Fatal("found in an empty ring")
	}
	pkt := func(seq uint32) []byte { return bytes.Repeat([]byte{byte(seq)}, 1000) }
	for seq := uint32(0xfffffff0); seq != 0x20; seq += 2 { // across the wrap
		r.add(seq, pkt(seq))
	}
	for _, seq := range []uint32{0xfffffff0, 0xfffffffe, 0, 0x1e} {
		if b, _, ok := r.find(seq); !ok || !bytes.Equal(b, pkt(seq)) {
			t.Fatalf("seq %#x: found %v", seq, ok)
		}
	}
	for _, seq := range []uint32{0xffffffef, 0xfffffff1, 1, 0x20} {
		if _, _, ok := r.find(seq); ok {
			t.Fatalf("seq %#x found, never kept", seq)
		}
	}
	if b, kept := r.takeForRepair(0); !kept || !bytes.Equal(b, pkt(0)) {
		t.Fatal("a kept packet not taken for a repair")
	}
	if b, kept := r.takeForRepair(0); !kept || b != nil {
		t.Fatal("a packet taken for a repair twice (a request comes on two paths), or no longer kept")
	}
	if b, kept := r.takeForRepair(1); kept || b != nil {
		t.Fatal("a sequence never kept taken for a repair")
	}
	for seq := uint32(0x20); seq < 0x20+resendBytes/1000; seq++ { // write the old ones over
		r.add(seq, pkt(seq))
	}
	if _, _, ok := r.find(0xfffffff0); ok {
		t.Fatal("a written-over packet found")
	}
}
