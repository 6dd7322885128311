package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// awaitPath waits until the named path on b is up (or ctx ends).
func awaitPath(t *testing.T, ctx context.Context, b *bond.Bond, name string) {
	t.Helper()
	if err := b.Engine().WaitPath(ctx, name, true); err != nil {
		t.Fatal(err)
	}
}

// TestIPv6PathsCarryTraffic: a bond of one IPv4 and one IPv6 path, raw GRE
// (RFC 7676 on the IPv6 one) and GRE-in-UDP: both come up and a transfer
// crosses both.
func TestIPv6PathsCarryTraffic(t *testing.T) {
	for _, transport := range []string{"gre", "udp"} {
		t.Run(transport, func(t *testing.T) {
			b := startBond(t, lab.BondSpec{Uplinks: 2, Transport: transport, IPv6: []int{1}, Scheduler: "rr"})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			before := b.A.Engine().Status()
			res, err := traffic.Transfer(ctx, b.Net.NS("a"), b.Net.NS("b"), lab.BondAddrB, 20<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.SentSHA256 != res.ReceivedSHA256 {
				t.Fatal("the transfer arrived changed")
			}
			after := b.A.Engine().Status()
			v6 := after[1].TxPackets - before[1].TxPackets
			t.Logf("20 MB in %v; the IPv6 path carried %d packets, the IPv4 one %d", res.Duration.Round(time.Millisecond), v6, after[0].TxPackets-before[0].TxPackets)
			if v6 == 0 {
				t.Fatal("the IPv6 path carried nothing")
			}
		})
	}
}

// TestPathJoinsWhenItsAddressAppears: site A's uplink 1 has no address
// when the bond starts; the path waits while the bond runs on uplink 0,
// and joins once the address is added.
func TestPathJoinsWhenItsAddressAppears(t *testing.T) {
	requireRoot(t)
	net, err := netns.Sites(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	a := net.NS("a")
	ul1, err := a.NL.LinkByName(netns.UplinkName(1))
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(netns.UplinkAddr(1, 1) + "/30")
	if err := a.NL.AddrDel(ul1, addr); err != nil {
		t.Fatal(err)
	}
	lb, ctx := startBondOn(t, net, lab.BondSpec{Uplinks: 2, NoWait: true})
	sides := [2]*bond.Bond{lb.A, lb.B}
	awaitPath(t, ctx, sides[0], netns.UplinkName(0))
	if w := pathStatus(t, sides[0], netns.UplinkName(1)).Waiting; w == "" {
		t.Fatal("uplink 1 without its address is not waiting")
	}
	added := time.Now()
	if err := a.NL.AddrAdd(ul1, addr); err != nil { // the modem came up
		t.Fatal(err)
	}
	awaitPath(t, ctx, sides[0], netns.UplinkName(1))
	awaitPath(t, ctx, sides[1], netns.UplinkName(1))
	t.Logf("uplink 1 up on both sites %v after its address appeared", time.Since(added).Round(time.Millisecond))
}

// TestRecreatedUplinkRejoins: site A's uplink 1 is deleted (and with it the
// veth pair) and created again with its addresses, as a PPP or LTE
// reconnect does: the path goes waiting and rejoins without a restart,
// routing (managed) and all.
func TestRecreatedUplinkRejoins(t *testing.T) {
	requireRoot(t)
	net, err := netns.Sites(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	lb, ctx := startBondOn(t, net, lab.BondSpec{Uplinks: 2, Transport: "udp", KeyFile: keyFile(t)}) // both paths up
	sides := [2]*bond.Bond{lb.A, lb.B}
	a, b := net.NS("a"), net.NS("b")
	ul1, err := a.NL.LinkByName(netns.UplinkName(1))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.NL.LinkDel(ul1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pathStatus(t, sides[0], netns.UplinkName(1)).Waiting == "" {
		if time.Now().After(deadline) {
			t.Fatal("uplink 1 deleted, yet its path is not waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Created again: the same names and addresses, a new device.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: netns.UplinkName(1)}, PeerName: netns.UplinkName(1),
		PeerNamespace: netlink.NsFd(int(b.Handle()))}
	if err := a.NL.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct {
		ns   *netns.Namespace
		side int
	}{{a, 1}, {b, 2}} {
		l, err := x.ns.NL.LinkByName(netns.UplinkName(1))
		if err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr(netns.UplinkAddr(1, x.side) + "/30")
		addr.Flags = unix.IFA_F_NODAD
		if err := x.ns.NL.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
		if err := x.ns.NL.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range sides {
		awaitPath(t, ctx, s, netns.UplinkName(1))
	}
	res, err := traffic.Transfer(ctx, a, b, lab.BondAddrB, 20<<20, nil)
	if err != nil || res.SentSHA256 != res.ReceivedSHA256 {
		t.Fatalf("transfer after the rejoin: %v", err)
	}
	if st := pathStatus(t, sides[0], netns.UplinkName(1)); st.Waiting != "" || !st.Up {
		t.Fatalf("uplink 1 after the rejoin: %+v", st)
	}
}

// TestAutoFallsBackToUDP: two auto paths; a firewall on site B drops IP
// protocol 47 on uplink 1. Uplink 0 stays on raw GRE; uplink 1 gets no
// answer over it, falls back to GRE-in-UDP on both sites and carries its
// share of a transfer.
func TestAutoFallsBackToUDP(t *testing.T) {
	requireRoot(t)
	nft := labtest.RequireTool(t, "nft")
	net, err := netns.Sites(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { net.Close() })
	rules := `table inet tunbond_lab_fw {
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "` + netns.UplinkName(1) + `" meta l4proto gre drop
	}
}
`
	cmd := exec.Command(nft, "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := net.NS("b").Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nft: %v: %s", err, out.String())
	}
	lb, ctx := startBondOn(t, net, lab.BondSpec{Uplinks: 2, Transport: "auto", KeyFile: keyFile(t), Scheduler: "rr"}) // both paths up
	sides := [2]*bond.Bond{lb.A, lb.B}
	for side, s := range sides {
		if tr := pathStatus(t, s, netns.UplinkName(0)).Transport; tr != "auto: gre" {
			t.Errorf("site %d: uplink 0 %q, want it still on raw GRE", side+1, tr)
		}
		if tr := pathStatus(t, s, netns.UplinkName(1)).Transport; tr != "auto: udp" {
			t.Errorf("site %d: uplink 1 %q, want it fallen back to UDP", side+1, tr)
		}
	}
	before := sides[0].Engine().Status()
	res, err := traffic.Transfer(ctx, net.NS("a"), net.NS("b"), lab.BondAddrB, 20<<20, nil)
	if err != nil || res.SentSHA256 != res.ReceivedSHA256 {
		t.Fatalf("transfer: %v", err)
	}
	if after := sides[0].Engine().Status(); after[1].TxPackets == before[1].TxPackets {
		t.Fatal("the fallen-back path carried nothing")
	}
}
