package e2e

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/netns"

	"github.com/vishvananda/netlink"
)

// TestManagedRoutingInstalledAndRemoved checks `routing: manage`: a table
// per path with its on-link route and a `from <local>` rule while the
// endpoint runs; none of it, nor the TUN, after it stops.
func TestManagedRoutingInstalledAndRemoved(t *testing.T) {
	b := startBond(t, lab.BondSpec{Weights: []int64{1, 1}})
	nl := b.Net.NS("a").NL
	rulesFor := func() map[int]string {
		rules, err := nl.RuleList(netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		out := map[int]string{}
		for _, r := range rules {
			if r.Table >= 7700 && r.Table < 7710 && r.Src != nil {
				out[r.Table] = r.Src.String()
				if r.Protocol != host.Protocol {
					t.Errorf("rule from %v lookup %d has protocol %d, want tunbond's %d", r.Src, r.Table, r.Protocol, host.Protocol)
				}
			}
		}
		return out
	}
	got := rulesFor()
	for i := 0; i < 2; i++ {
		if want := netns.UplinkAddr(i, 1) + "/32"; got[7700+i] != want {
			t.Fatalf("rule for table %d: %q, want from %s (all: %v)", 7700+i, got[7700+i], want, got)
		}
		routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 7700 + i}, netlink.RT_FILTER_TABLE)
		if err != nil || len(routes) == 0 {
			t.Fatalf("table %d: %v %v", 7700+i, routes, err)
		}
		for _, r := range routes {
			if r.Protocol != host.Protocol {
				t.Errorf("route %v table %d has protocol %d, want tunbond's %d", r.Dst, r.Table, r.Protocol, host.Protocol)
			}
		}
	}
	tun, err := nl.LinkByName("bond0")
	if err != nil {
		t.Fatal(err)
	}
	if tun.Attrs().MTU != 1500-32 {
		t.Fatalf("TUN MTU %d, want 1468 (1500 − GRE with key and sequence − IPv4)", tun.Attrs().MTU)
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if left := rulesFor(); len(left) != 0 {
		t.Fatalf("rules left after stop: %v", left)
	}
	for i := 0; i < 2; i++ {
		routes, _ := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 7700 + i}, netlink.RT_FILTER_TABLE)
		if len(routes) != 0 {
			t.Fatalf("table %d not emptied: %v", 7700+i, routes)
		}
	}
	if _, err := nl.LinkByName("bond0"); err == nil {
		t.Fatal("TUN left after stop")
	}
}

func TestEndpointClearErrors(t *testing.T) {
	requireRoot(t)
	id := newID(t)
	net, err := netns.Sites(1).Build(id)
	if err != nil {
		t.Fatal(err)
	}
	defer net.Close()
	cfg := endpointConfig(t, lab.BondSpec{Weights: []int64{1}}, 1)
	cfg.Paths[0].Local = "10.200.0.1" // not in the namespace
	_, err = bond.Start(cfg, bond.Deps{Host: net.NS("a").Host()})
	if err == nil || !strings.Contains(err.Error(), "local address 10.200.0.1 is not on any interface") {
		t.Fatalf("error %v", err)
	}
	cfg = endpointConfig(t, lab.BondSpec{Weights: []int64{1}}, 1)
	cfg.Paths[0].Device = "nosuch0"
	_, err = bond.Start(cfg, bond.Deps{Host: net.NS("a").Host()})
	if err == nil || !strings.Contains(err.Error(), "device nosuch0") {
		t.Fatalf("error %v", err)
	}
	// A failed start leaves nothing: the TUN name is free again.
	if _, err := net.NS("a").NL.LinkByName("bond0"); err == nil {
		t.Fatal("TUN left by a failed start")
	}
}

func TestControlSocket(t *testing.T) {
	requireRoot(t)
	id := newID(t)
	n, err := netns.Sites(1).Build(id)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sock := filepath.Join(t.TempDir(), "ctl.sock")
	var eps []*bond.Bond
	for side, ns := range []*netns.Namespace{1: n.NS("a"), 2: n.NS("b")} {
		if ns == nil {
			continue
		}
		cfg := endpointConfig(t, lab.BondSpec{Weights: []int64{5}}, side)
		if side == 1 {
			cfg.Control.Socket = sock
		}
		ep, err := bond.Start(cfg, bond.Deps{Host: ns.Host()})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		eps = append(eps, ep)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, ep := range eps {
		if err := ep.Engine().WaitPath(ctx, netns.UplinkName(0), true); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := bond.Control(sock, bond.ControlRequest{Cmd: "status"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Paths) != 1 || !resp.Paths[0].Up || resp.Paths[0].Weight != 5 || resp.Paths[0].RTTMs <= 0 {
		t.Fatalf("status %+v", resp.Paths)
	}
	if _, err := bond.Control(sock, bond.ControlRequest{Cmd: "weight", Path: netns.UplinkName(0), Weight: 9}); err != nil {
		t.Fatal(err)
	}
	if st := eps[0].Engine().Status(); st[0].Weight != 9 {
		t.Fatalf("weight not applied: %+v", st[0])
	}
	if _, err := bond.Control(sock, bond.ControlRequest{Cmd: "weight", Path: "nope", Weight: 1}); err == nil || !strings.Contains(err.Error(), "no path named") {
		t.Fatalf("unknown path: %v", err)
	}
	if _, err := bond.Control(sock, bond.ControlRequest{Cmd: "explode"}); err == nil {
		t.Fatal("unknown command accepted")
	}
	eps[0].Close()
	if _, err := net.Dial("unix", sock); err == nil {
		t.Fatal("control socket still answers after stop")
	}
}

// TestDeletedTUNStopsTheBond deletes the TUN under a running bond: it stops
// by itself, says why, and its paths are no longer reported up.
func TestDeletedTUNStopsTheBond(t *testing.T) {
	b := startBond(t, lab.BondSpec{Weights: []int64{1}})
	nl := b.Net.NS("a").NL
	l, err := nl.LinkByName("bond0")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.A.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the bond runs on without its TUN")
	}
	if err := b.A.Err(); err == nil || !strings.Contains(err.Error(), "TUN") {
		t.Fatalf("Err() = %v, want the TUN read error", err)
	}
	if up, _ := b.A.Engine().PathUp(netns.UplinkName(0)); up {
		t.Fatal("path still reported up after the bond stopped")
	}
	if err := b.Stop(); err != nil {
		t.Fatalf("closing a bond whose TUN is gone: %v", err)
	}
}

// TestStartRemovesAKilledRunsRouting: the rule and table a SIGKILLed run
// left (tunbond's protocol, another route_table and rule_priority than
// now) are gone once the next run starts; a rule that is not tunbond's
// stays.
func TestStartRemovesAKilledRunsRouting(t *testing.T) {
	requireRoot(t)
	n, err := netns.Sites(1).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	h := n.NS("a").Host()
	src := netip.MustParsePrefix(netns.UplinkAddr(0, 1) + "/32")
	for _, err := range []error{
		h.AddRule(host.Rule{Priority: 900, Src: src, Table: 77}),
		h.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("10.100.0.0/30"), Link: netns.UplinkName(0), Table: 77, Scope: host.ScopeLink}),
		h.AddRule(host.Rule{Priority: 901, Src: src, Table: 78, Protocol: 4}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	b, err := bond.Start(endpointConfig(t, lab.BondSpec{Weights: []int64{1}}, 1), bond.Deps{Host: h})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rules, err := h.Rules()
	if err != nil {
		t.Fatal(err)
	}
	var kept bool
	for _, r := range rules {
		if r.Table == 77 {
			t.Errorf("a killed run's rule is left: %v", r)
		}
		kept = kept || r.Table == 78
	}
	if !kept {
		t.Error("a rule that is not tunbond's was removed")
	}
	if routes, _ := h.Routes(77); len(routes) != 0 {
		t.Errorf("a killed run's table is left: %v", routes)
	}
}

func endpointConfig(t *testing.T, s lab.BondSpec, side int) *bond.Config {
	t.Helper()
	cfg, err := s.EndpointConfig(side)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
