package host_test

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/tunbond/tunbond/endpoints/host"
)

// newNamespace makes an anonymous network namespace (it goes away with its
// last handle, so a failed test leaves nothing) with a veth "up0" (its peer up0p up beside it), and
// returns a Host over it.
func newNamespace(t *testing.T) *host.Netlink {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("namespace tests need root, and CI runs as root")
		}
		t.Skip("needs root (network namespaces)")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // switches this thread into it
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nl.Close)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "up0"}, PeerName: "up0p"}); err != nil {
		t.Fatalf("veth in a new namespace: %v", err)
	}
	if l, err := nl.LinkByName("up0p"); err != nil || nl.LinkSetUp(l) != nil {
		t.Fatalf("veth peer: %v", err)
	}
	do := func(f func() error) error {
		done := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // the thread is dropped, never returned to Go's pool
			if err := netns.Set(ns); err != nil {
				done <- err
				return
			}
			done <- f()
		}()
		return <-done
	}
	return host.NewNetlink(nl, do)
}

func TestNetlinkChangesAndUndo(t *testing.T) {
	h := newNamespace(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.SetLinkUp("lo"))
	routesBefore, _ := h.Routes(0)
	rulesBefore, _ := h.Rules()
	rp, err := h.Sysctl("net.ipv4.conf.all.rp_filter")
	must(err)

	c := host.NewChanges(h)
	must(c.ReplaceAddr("up0", netip.MustParsePrefix("192.0.2.1/24")))
	must(h.SetLinkUp("up0"))
	must(c.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("192.0.2.254"), Link: "up0", Table: 100}))
	must(c.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("203.0.113.7/32"), Table: 100, Blackhole: true}))
	must(c.AddRule(host.Rule{Priority: 1000, Src: netip.MustParsePrefix("192.0.2.1/32"), Table: 100}))
	must(c.SetSysctl("net.ipv4.conf.all.rp_filter", map[bool]string{true: "1", false: "2"}[rp != "1"]))

	l, p, err := h.LinkByAddr(netip.MustParseAddr("192.0.2.1"))
	if err != nil || l.Name != "up0" || p.Bits() != 24 || !l.Up {
		t.Fatalf("LinkByAddr: %+v %v %v", l, p, err)
	}
	routes, err := h.Routes(100)
	must(err)
	slices.SortFunc(routes, func(a, b host.Route) int { return a.Dst.Addr().Compare(b.Dst.Addr()) })
	if len(routes) != 2 || routes[0].Protocol != host.Protocol || routes[0].Link != "up0" || routes[0].Gateway != netip.MustParseAddr("192.0.2.254") || routes[0].Blackhole ||
		!routes[1].Blackhole || routes[1].Dst != netip.MustParsePrefix("203.0.113.7/32") || routes[1].String() != "blackhole 203.0.113.7/32 table 100 proto "+fmt.Sprint(host.Protocol) {
		t.Fatalf("table 100: %v", routes)
	}
	rules, err := h.Rules()
	must(err)
	if !slices.ContainsFunc(rules, func(r host.Rule) bool { return r.Priority == 1000 && r.Table == 100 && r.Protocol == host.Protocol }) {
		t.Fatalf("rule not installed with protocol %d: %v", host.Protocol, rules)
	}

	must(c.Undo())
	if routes, _ := h.Routes(100); len(routes) != 0 {
		t.Fatalf("table 100 after undo: %v", routes)
	}
	if rules, _ := h.Rules(); len(rules) != len(rulesBefore) {
		t.Fatalf("rules after undo: %v, before %v", rules, rulesBefore)
	}
	if got, _ := h.Sysctl("net.ipv4.conf.all.rp_filter"); got != rp {
		t.Fatalf("rp_filter %s after undo, was %s", got, rp)
	}
	if _, _, err := h.LinkByAddr(netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Fatal("address left after undo")
	}
	if after, _ := h.Routes(0); len(ours(after)) != len(ours(routesBefore)) {
		t.Fatalf("main table after undo: %v, before %v", after, routesBefore)
	}
}

func TestNetlinkRemoveLeftovers(t *testing.T) {
	h := newNamespace(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.ReplaceAddr("up0", netip.MustParsePrefix("192.0.2.1/24")))
	must(h.SetLinkUp("up0"))
	src := netip.MustParsePrefix("192.0.2.1/32")
	// What a SIGKILLed run left, with a route_table and rule_priority since changed.
	must(h.AddRule(host.Rule{Priority: 901, Src: src, Table: 77}))
	must(h.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Link: "up0", Table: 77, Scope: host.ScopeLink}))
	// Not tunbond's: the same source in a static rule.
	must(h.AddRule(host.Rule{Priority: 902, Src: src, Table: 78, Protocol: 4}))
	removed, err := host.RemoveLeftovers(h, []netip.Prefix{src})
	must(err)
	if len(removed) != 2 || !strings.HasPrefix(removed[0], "rule 901") {
		t.Fatalf("removed %q", removed)
	}
	rules, _ := h.Rules()
	if !slices.ContainsFunc(rules, func(r host.Rule) bool { return r.Priority == 902 }) {
		t.Fatalf("a rule that is not tunbond's was removed: %v", rules)
	}
	if slices.ContainsFunc(rules, func(r host.Rule) bool { return r.Priority == 901 }) {
		t.Fatalf("the leftover rule is still there: %v", rules)
	}
	if routes, _ := h.Routes(77); len(routes) != 0 {
		t.Fatalf("the leftover table still has %v", routes)
	}
}

func TestNetlinkMissingIsNotAnError(t *testing.T) {
	h := newNamespace(t)
	if err := h.DelRoute(host.Route{Dst: netip.MustParsePrefix("203.0.113.0/24"), Link: "up0", Table: 5}); err != nil {
		t.Fatalf("deleting a missing route: %v", err)
	}
	if err := h.DelRule(host.Rule{Priority: 5, Src: netip.MustParsePrefix("203.0.113.1/32"), Table: 5}); err != nil {
		t.Fatalf("deleting a missing rule: %v", err)
	}
	if _, err := h.Link("nope0"); err == nil {
		t.Fatal("a missing link was found")
	}
}

// ours keeps the routes tunbond installed (the kernel adds its own as links come up).
func ours(rs []host.Route) []host.Route {
	var out []host.Route
	for _, r := range rs {
		if r.Protocol == host.Protocol {
			out = append(out, r)
		}
	}
	return out
}

// TestWatchSeesAddressesComeAndGo: Watch fires when an address is added to
// a link of the namespace and when the link goes; LinkAddrs lists what the
// link holds, link-local addresses left out.
func TestWatchSeesAddressesComeAndGo(t *testing.T) {
	h := newNamespace(t)
	done := make(chan struct{})
	defer close(done)
	ch, err := h.Watch(done)
	if err != nil {
		t.Fatal(err)
	}
	drain := func() {
		for {
			select {
			case <-ch:
			default:
				return
			}
		}
	}
	await := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("no change seen after %s", what)
		}
	}
	drain()
	a := netip.MustParsePrefix("192.0.2.7/24")
	if err := h.ReplaceAddr("up0", a); err != nil {
		t.Fatal(err)
	}
	await("an address was added")
	got, err := h.LinkAddrs("up0")
	if err != nil || !slices.Contains(got, a) {
		t.Fatalf("LinkAddrs = %v, %v; want %v among them", got, err, a)
	}
	for _, p := range got {
		if p.Addr().IsLinkLocalUnicast() {
			t.Errorf("LinkAddrs listed the link-local %v", p)
		}
	}
	drain()
	if err := h.DelAddr("up0", a); err != nil {
		t.Fatal(err)
	}
	await("the address was removed")
}
