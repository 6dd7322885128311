package bond

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tunbond/tunbond/endpoints/host"
)

// uplinkLink is the interface that holds a path's local address.
type uplinkLink struct {
	link   host.Link
	prefix netip.Prefix // the local address with its prefix there
}

// pathRouting is what routing: manage installed for one path: a table
// with its on-link prefix and, when there is one, a default route via its
// gateway, and the rule "from <local> lookup <table>", so each tunnel
// leaves by its own uplink whatever the main table says. The routes and
// rule carry tunbond's protocol (host.Protocol); c undoes them at Close,
// remove when the path goes waiting (its device may be gone, and with it
// the routes: deleting what is not there is not an error).
type pathRouting struct {
	routes []host.Route
	rule   host.Rule
}

// installPathRouting installs path i's table and rule for its local
// address local, held by l with prefix pfx.
func installPathRouting(c *host.Changes, cfg *Config, i int, l host.Link, local netip.Addr, pfx netip.Prefix) (*pathRouting, error) {
	p := cfg.Paths[i]
	table := cfg.RouteTable + i
	remote, _ := netip.ParseAddr(p.Remote) // none: learned (a udp path with auth), checked by no route here
	onlink := pfx.Masked()
	bits := 32
	if local.Is6() {
		bits = 128
	}
	r := &pathRouting{routes: []host.Route{{Dst: onlink, Link: l.Name, Src: local, Scope: host.ScopeLink, Table: table}},
		rule: host.Rule{Priority: cfg.RulePriority, Src: netip.PrefixFrom(local, bits), Table: table}}
	gw, _ := netip.ParseAddr(p.Gateway)
	if !gw.IsValid() {
		gw = defaultGateway(c.Host(), l.Name, local.Is6())
	}
	if gw.IsValid() {
		r.routes = append(r.routes, host.Route{Gateway: gw, Link: l.Name, Src: local, Table: table})
	} else if remote.IsValid() && !onlink.Contains(remote) {
		return nil, fmt.Errorf("paths[%d] (%s): remote %s is not on-link of %s and no gateway is configured or found in the main table (set paths[%d].gateway)",
			i, p.Name, p.Remote, l.Name, i)
	}
	for _, rt := range r.routes {
		if err := c.ReplaceRoute(rt); err != nil {
			return nil, fmt.Errorf("paths[%d] (%s): %w", i, p.Name, err)
		}
	}
	if err := c.AddRule(r.rule); err != nil {
		return nil, fmt.Errorf("paths[%d] (%s): rule from %s lookup %d: %w", i, p.Name, local, table, err)
	}
	return r, nil
}

// remove deletes the path's routes and rule.
func (r *pathRouting) remove(c *host.Changes) error {
	var errs []error
	errs = append(errs, c.DelRule(r.rule))
	for _, rt := range r.routes {
		errs = append(errs, c.DelRoute(rt))
	}
	return errors.Join(errs...)
}

// defaultGateway is the gateway of the main table's default route through
// link, of the family asked for, or the zero Addr.
func defaultGateway(h host.Host, link string, v6 bool) netip.Addr {
	routes, err := h.Routes(0)
	if err != nil {
		return netip.Addr{}
	}
	for _, r := range routes {
		if r.Link == link && r.Gateway.IsValid() && r.Gateway.Is6() == v6 && (!r.Dst.IsValid() || r.Dst.Bits() == 0) {
			return r.Gateway
		}
	}
	return netip.Addr{}
}
