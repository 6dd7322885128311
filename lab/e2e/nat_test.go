package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
	"github.com/tunbond/tunbond/tunnel/session"
)

// keyFile writes a new key, as `tunbond genkey > FILE; chmod 600 FILE` would.
func keyFile(t *testing.T) string {
	t.Helper()
	k, err := session.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "bond.key")
	if err := session.WriteKeyFile(f, k); err != nil {
		t.Fatal(err)
	}
	return f
}

// pathStatus is the named path's status on one end.
func pathStatus(t *testing.T, b *bond.Bond, name string) bond.PathStatus {
	t.Helper()
	for _, p := range b.Engine().Status() {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no path %s", name)
	return bond.PathStatus{}
}

// TestBondCrossesNAT: uplink 1 crosses a NAT (nftables masquerade with
// random ports) to a site B that has no remote for it: B learns the
// NAT's address and port from A's authenticated packets, the path
// carries its share of a 200 MB transfer, and when the NAT forgets its
// mapping mid-transfer (conntrack flushed) B follows the new port and the
// transfer arrives intact.
func TestBondCrossesNAT(t *testing.T) {
	requireRoot(t)
	labtest.RequireTool(t, "nft")
	b := startBond(t, lab.BondSpec{Uplinks: 2, Transport: "udp", KeyFile: keyFile(t), NAT: []int{1}})
	ul1 := netns.UplinkName(1)
	learned := pathStatus(t, b.B, ul1)
	if want := netns.NATPublic(1) + ":"; len(learned.Remote) <= len(want) || learned.Remote[:len(want)] != want {
		t.Fatalf("site B's %s remote is %q, want the NAT's public address %s<port>", ul1, learned.Remote, want)
	}
	t.Logf("site B learned %s's remote: %s", ul1, learned.Remote)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	before := b.A.Engine().Status()
	done := transferUnderWay(t, ctx, b.Net, 60<<20, "the NAT forgets its mapping")
	if err := b.Net.FlushNAT(1); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(10 * time.Second)
	for tick := time.NewTicker(5 * time.Millisecond); pathStatus(t, b.B, ul1).RemoteChanges == learned.RemoteChanges; {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("site B's %s never followed the NAT's new mapping (remote still %s)", ul1, pathStatus(t, b.B, ul1).Remote)
		}
	}
	moved := pathStatus(t, b.B, ul1)
	t.Logf("after the flush site B's %s remote moved to %s", ul1, moved.Remote)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.r.SentSHA256 != r.r.ReceivedSHA256 {
		t.Fatal("the transfer arrived changed")
	}
	after := b.A.Engine().Status()
	var total float64
	for i := range after {
		total += float64(after[i].TxBytes - before[i].TxBytes)
	}
	share := float64(after[1].TxBytes-before[1].TxBytes) / total
	t.Logf("200 MB in %v (%.0f Mbit/s); the NAT path carried %.2f of it", r.r.Duration.Round(time.Millisecond), r.r.GoodputMbps(), share)
	if share < 0.2 {
		t.Errorf("the NAT path carried %.2f of the bytes; two equal uplinks should share them", share)
	}
}

// TestSealedBondCarriesOnAfterAPeerRestart: site B restarts (a new
// process: a new epoch and session); A recognises it by the epoch under a
// new handshake, and pings go through again, with no restart of A.
func TestSealedBondCarriesOnAfterAPeerRestart(t *testing.T) {
	requireRoot(t)
	spec := lab.BondSpec{Uplinks: 2, Transport: "udp", KeyFile: keyFile(t)}
	b := startBond(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if rtts, err := traffic.Ping(ctx, b.Net.NS("a"), lab.BondAddrB, 3, 20*time.Millisecond); err != nil || rtts[2] == 0 {
		t.Fatalf("no ping through the bond before the restart: %v %v", rtts, err)
	}
	sessions := b.A.Engine().Sessions()
	if err := b.B.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, err := spec.EndpointConfig(2)
	if err != nil {
		t.Fatal(err)
	}
	// Pings every 10 ms from the restart on: the first answered says when
	// the bond carried again.
	type pings struct {
		rtts []time.Duration
		err  error
	}
	const every = 10 * time.Millisecond
	got := make(chan pings, 1)
	go func() {
		rtts, err := traffic.Ping(ctx, b.Net.NS("a"), lab.BondAddrB, 300, every)
		got <- pings{rtts, err}
	}()
	b.B, err = bond.Start(cfg, bond.Deps{Host: b.Net.NS("b").Host()})
	if err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.err != nil {
		t.Fatal(p.err)
	}
	first := -1
	for i, r := range p.rtts {
		if r != 0 {
			first = i
			break
		}
	}
	if first < 0 {
		t.Fatalf("no ping through the bond in %v after site B restarted", 300*every)
	}
	back := time.Duration(first)*every + p.rtts[first]
	t.Logf("pings through again %v after site B restarted", back.Round(time.Millisecond))
	if n := b.A.Engine().Stats.PeerRestarts.Load(); n != 1 {
		t.Errorf("site A counted %d peer restarts, want 1", n)
	}
	if b.A.Engine().Sessions() == sessions {
		t.Error("site A agreed no new session with the restarted peer")
	}
}
