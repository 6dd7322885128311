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

// findUplinks finds, for each path, the interface that holds its local
// address, or says which path's address is not on this host.
func findUplinks(h host.Host, paths []PathConfig) ([]uplinkLink, error) {
	out := make([]uplinkLink, len(paths))
	for i, p := range paths {
		local := netip.MustParseAddr(p.Local)
		l, pfx, err := h.LinkByAddr(local)
		if errors.Is(err, host.ErrNotFound) {
			return nil, fmt.Errorf("paths[%d] (%s): local address %s is not on any interface of this host", i, p.Name, p.Local)
		}
		if err != nil {
			return nil, fmt.Errorf("paths[%d] (%s): %w", i, p.Name, err)
		}
		out[i] = uplinkLink{link: l, prefix: pfx}
		if p.Device != "" {
			if _, err := h.Link(p.Device); err != nil {
				return nil, fmt.Errorf("paths[%d] (%s): device %s: %w", i, p.Name, p.Device, err)
			}
		}
	}
	return out, nil
}

// installRouting gives every path a routing table (route_table + index)
// with its on-link prefix and, if needed, a default route via its gateway,
// and a rule "from <local> lookup <table>", so each tunnel leaves by its own
// uplink whatever the main table says. The routes and rules carry
// tunbond's protocol (host.Protocol), and c undoes them.
func installRouting(c *host.Changes, cfg *Config, links []uplinkLink) error {
	for i, p := range cfg.Paths {
		table := cfg.RouteTable + i
		l := links[i]
		local := netip.MustParseAddr(p.Local)
		remote, _ := netip.ParseAddr(p.Remote) // none: learned (a udp path with auth), checked by no route here
		onlink := l.prefix.Masked()
		routes := []host.Route{{Dst: onlink, Link: l.link.Name, Src: local, Scope: host.ScopeLink, Table: table}}
		gw, _ := netip.ParseAddr(p.Gateway)
		if !gw.IsValid() {
			gw = defaultGateway(c.Host(), l.link.Name)
		}
		if gw.IsValid() {
			routes = append(routes, host.Route{Gateway: gw, Link: l.link.Name, Src: local, Table: table})
		} else if remote.IsValid() && !onlink.Contains(remote) {
			return fmt.Errorf("paths[%d] (%s): remote %s is not on-link of %s and no gateway is configured or found in the main table (set paths[%d].gateway)",
				i, p.Name, p.Remote, l.link.Name, i)
		}
		for _, r := range routes {
			if err := c.ReplaceRoute(r); err != nil {
				return fmt.Errorf("paths[%d] (%s): %w", i, p.Name, err)
			}
		}
		rule := host.Rule{Priority: cfg.RulePriority, Src: netip.PrefixFrom(local, 32), Table: table}
		if err := c.AddRule(rule); err != nil {
			return fmt.Errorf("paths[%d] (%s): rule from %s lookup %d: %w", i, p.Name, p.Local, table, err)
		}
	}
	return nil
}

// defaultGateway is the IPv4 gateway of the main table's default route
// through link, or the zero Addr.
func defaultGateway(h host.Host, link string) netip.Addr {
	routes, err := h.Routes(0)
	if err != nil {
		return netip.Addr{}
	}
	for _, r := range routes {
		if r.Link == link && r.Gateway.Is4() && (!r.Dst.IsValid() || r.Dst.Bits() == 0) {
			return r.Gateway
		}
	}
	return netip.Addr{}
}
