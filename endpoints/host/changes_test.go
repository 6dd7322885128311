package host_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/host/hosttest"
)

func TestChangesUndoRestoresTheHost(t *testing.T) {
	h := hosttest.New("eth0", "tb0")
	h.SetSysctlValue("net.ipv4.conf.all.rp_filter", "2")
	h.SetSysctlValue("net.ipv4.conf.eth0.rp_filter", "0")
	if err := h.ReplaceAddr("eth0", netip.MustParsePrefix("192.0.2.1/24")); err != nil { // the system's own
		t.Fatal(err)
	}
	before := h.State()

	c := host.NewChanges(h)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.ReplaceAddr("tb0", netip.MustParsePrefix("10.77.0.1/30")))
	must(c.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Link: "eth0", Table: 100, Scope: host.ScopeLink}))
	must(c.AddRule(host.Rule{Priority: 1000, Src: netip.MustParsePrefix("192.0.2.1/32"), Table: 100}))
	must(c.SetSysctl("net.ipv4.conf.all.rp_filter", "0"))
	must(c.SetSysctl("net.ipv4.conf.eth0.rp_filter", "0")) // already so: not a change
	if c.Len() != 4 {
		t.Fatalf("%d changes to undo, want 4", c.Len())
	}
	if got := strings.Join(h.State(), "\n"); !strings.Contains(got, "rule 1000: from 192.0.2.1/32 lookup 100 proto 201") ||
		!strings.Contains(got, "route 192.0.2.0/24 dev eth0 table 100 proto 201 scope link") {
		t.Fatalf("changes not applied with tunbond's protocol:\n%s", got)
	}
	must(c.Undo())
	if after := h.State(); !slices.Equal(before, after) {
		t.Fatalf("host not restored:\nbefore %q\nafter  %q", before, after)
	}
	if c.Len() != 0 {
		t.Fatal("Undo left steps behind")
	}
}

func TestDelDropsTheUndo(t *testing.T) {
	h := hosttest.New("tb0")
	c := host.NewChanges(h)
	r := host.Route{Dst: netip.MustParsePrefix("192.0.2.10/32"), Link: "tb0"}
	if err := c.ReplaceRoute(r); err != nil {
		t.Fatal(err)
	}
	if err := c.DelRoute(r); err != nil {
		t.Fatal(err)
	}
	if c.Len() != 0 {
		t.Fatal("a deleted route is still to be undone")
	}
}

func TestRemoveLeftoversTakesOnlyTunbondsOwn(t *testing.T) {
	h := hosttest.New("eth0", "eth1")
	src := netip.MustParsePrefix("192.0.2.1/32")
	// A killed run's rule and table (an older route_table and rule_priority) ...
	_ = h.AddRule(host.Rule{Priority: 900, Src: src, Table: 77})
	_ = h.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Link: "eth0", Table: 77})
	// ... and what is not tunbond's: another protocol, another source.
	_ = h.AddRule(host.Rule{Priority: 900, Src: src, Table: 78, Protocol: 4})
	_ = h.AddRule(host.Rule{Priority: 900, Src: netip.MustParsePrefix("198.51.100.1/32"), Table: 79})
	_ = h.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Link: "eth1", Table: 77, Protocol: 4})
	removed, err := host.RemoveLeftovers(h, []netip.Prefix{src})
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 2 {
		t.Fatalf("removed %q, want the rule and the route", removed)
	}
	state := strings.Join(h.State(), "\n")
	for _, kept := range []string{"lookup 78 proto 4", "from 198.51.100.1/32 lookup 79", "198.51.100.0/24 dev eth1 table 77 proto 4"} {
		if !strings.Contains(state, kept) {
			t.Errorf("%q was removed; state:\n%s", kept, state)
		}
	}
}

func TestRecorderFailsOnDemand(t *testing.T) {
	h := hosttest.New("tb0")
	h.Fail["rule add"] = hosttest.ErrExists
	c := host.NewChanges(h)
	if err := c.AddRule(host.Rule{Priority: 1, Src: netip.MustParsePrefix("10.0.0.1/32"), Table: 5}); err == nil {
		t.Fatal("injected failure not returned")
	}
	if c.Len() != 0 {
		t.Fatal("a failed change is to be undone")
	}
}
