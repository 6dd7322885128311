package e2e

import (
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/emulator"
	"github.com/tunbond/tunbond/lab/traffic"
)

// TestBondRepairsALossyPath: two 50 Mbit/s uplinks through the WAN
// emulator, one losing 2% of its packets at random in both directions, a
// bond with the default config: A offers repair, B asks for what the lossy
// path lost, and a 50 MB transfer arrives intact with a good part of the
// lossy path's losses sent again (at least a quarter of its 2%: the offer
// follows what the path is learned to lose, so not every one is), some in
// time to go in order.
func TestBondRepairsALossyPath(t *testing.T) {
	requireRoot(t)
	net, err := emulator.WANTopology(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	clean := emulator.Params{RateBps: 50e6, Delay: 10 * time.Millisecond}
	lossy := clean
	lossy.Loss = 0.02
	emu, err := emulator.StartWAN(net, [][2]emulator.Params{{clean, clean}, {lossy, lossy}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { emu.Close() })
	b, ctx := startBondOn(t, net)
	rtx0, err := traffic.RetransSegs(net.NS("a"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := traffic.Transfer(ctx, net.NS("a"), net.NS("b"), lab.BondAddrB, 50<<20, nil)
	if err != nil {
		t.Fatalf("transfer over a lossy path: %v", err)
	}
	rtx, err := traffic.RetransSegs(net.NS("a"))
	if err != nil {
		t.Fatal(err)
	}
	a, rs := b.A.Engine(), b.B.Engine().ReorderStats()
	resent := a.Stats.Repaired.Load()
	t.Logf("50 MB in %v (%.0f Mbit/s); B asked %d, A sent %d again, %d in time to go in order; inner TCP retransmitted %d",
		r.Duration.Round(time.Millisecond), r.GoodputMbps(), rs.RepairAsked.Load(), resent, rs.Repaired.Load(), rtx-rtx0)
	if rs.RepairAsked.Load() == 0 || resent == 0 || rs.Repaired.Load() == 0 {
		t.Fatal("a path losing 2% was not repaired")
	}
	if sent := a.Status()[1].TxPackets; resent < sent/200 {
		t.Errorf("the lossy path carried %d packets, about %d of them lost; only %d were sent again", sent, sent/50, resent)
	}
}
