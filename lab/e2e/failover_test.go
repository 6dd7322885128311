package e2e

import (
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// TestBondBlackholeNoRTO: a bond with no weights configured (the default
// scheduler learns the paths) over two uplinks shaped to 100 Mbit/s uses
// both, and a 200 MB transfer across a silent blackhole of one uplink (tc
// ingress drop on both sites, carrier kept) arrives intact: the stalled
// path's packets are re-sent on the other, so the sender's kernel counts no
// retransmission timeout.
func TestBondBlackholeNoRTO(t *testing.T) {
	requireRoot(t)
	net, err := netns.Sites(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	for _, side := range []string{"a", "b"} {
		for i := 0; i < 2; i++ {
			if err := netns.ShapeTBF(net.NS(side), netns.UplinkName(i), 100e6, 4000, 0.05); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, ctx := startBondOn(t, net, lab.BondSpec{Uplinks: 2})
	rto0, err := traffic.TCPTimeouts(net.NS("a"))
	if err != nil {
		t.Fatal(err)
	}
	done := transferUnderWay(t, ctx, net, 60<<20, "the blackhole")
	before := b.A.Engine().Status()
	for i, p := range before {
		if p.TxBytes < 1<<20 {
			t.Errorf("with no weights set, uplink %d (%s) carried %d bytes of the first 60 MB", i, p.Name, p.TxBytes)
		}
	}
	hole, err := lab.BlackholeUplink(net, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Stop()
	r := <-done
	if r.err != nil {
		t.Fatalf("transfer did not survive the blackhole: %v", r.err)
	}
	rto, err := traffic.TCPTimeouts(net.NS("a"))
	if err != nil {
		t.Fatal(err)
	}
	st := b.A.Engine().Status()
	t.Logf("200 MB in %v (%.0f Mbit/s) across a blackhole of %s from 60 MB; %s: %d stalls, %d packets re-sent; RTOs %d",
		r.r.Duration.Round(time.Millisecond), r.r.GoodputMbps(), st[1].Name, st[1].Name, st[1].Stalls, st[1].Resent, rto-rto0)
	if st[1].Stalls == 0 {
		t.Errorf("the blackholed path was never stalled: %+v", st[1])
	}
	if rto != rto0 {
		t.Errorf("the sender counted %d retransmission timeouts across the blackhole, want 0", rto-rto0)
	}
}
