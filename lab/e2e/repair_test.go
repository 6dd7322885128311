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
// bond with reorder.repair on: A offers repair, B asks for what the paths
// lost, A sends it again, some of it in time to go in order, and a 50 MB
// transfer arrives intact. (How much is repaired follows what the path is
// learned to lose where it shows no queue, which under load and BBR comes
// seldom: in one CI run 17 of some 380 losses. That is the lab's to
// measure, not this test's.)
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
	// Repair on as a user turns it on: the endpoints' config comes from
	// bond.Defaults(), which reads TUNBOND_* like any user's.
	t.Setenv("TUNBOND_REORDER_REPAIR", "true")
	b, ctx := startBondOn(t, net, lab.BondSpec{Uplinks: 2})
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

}
