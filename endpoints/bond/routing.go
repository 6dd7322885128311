package bond

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// uplinkLink is the interface that holds a path's local address.
type uplinkLink struct {
	link   netlink.Link
	prefix *net.IPNet // the local address with its prefix
}

// findUplinks finds, for each path, the interface that holds its local
// address, or says which path's address is not on this host.
func findUplinks(nl *netlink.Handle, paths []PathConfig) ([]uplinkLink, error) {
	addrs, err := nl.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("listing addresses: %w", err)
	}
	out := make([]uplinkLink, len(paths))
	for i, p := range paths {
		local := netip.MustParseAddr(p.Local)
		found := false
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok && ip == local {
				l, err := nl.LinkByIndex(a.LinkIndex)
				if err != nil {
					return nil, err
				}
				out[i] = uplinkLink{link: l, prefix: a.IPNet}
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("paths[%d] (%s): local address %s is not on any interface of this host", i, p.Name, p.Local)
		}
		if p.Device != "" {
			if _, err := nl.LinkByName(p.Device); err != nil {
				return nil, fmt.Errorf("paths[%d] (%s): device %s: %w", i, p.Name, p.Device, err)
			}
		}
	}
	return out, nil
}

// managedRouting is what `routing: manage` installed, to remove at stop.
type managedRouting struct {
	nl     *netlink.Handle
	rules  []*netlink.Rule
	routes []*netlink.Route
}

// installRouting gives every path a routing table (route_table + index)
// with its on-link prefix and, if needed, a default route via its gateway,
// and a rule "from <local> lookup <table>", so each tunnel leaves by its own
// uplink whatever the main table says.
func installRouting(nl *netlink.Handle, cfg *Config, links []uplinkLink) (*managedRouting, error) {
	m := &managedRouting{nl: nl}
	for i, p := range cfg.Paths {
		table := cfg.RouteTable + i
		l := links[i]
		local := net.ParseIP(p.Local).To4()
		remote := net.ParseIP(p.Remote).To4()
		idx := l.link.Attrs().Index
		onlink := &net.IPNet{IP: l.prefix.IP.Mask(l.prefix.Mask), Mask: l.prefix.Mask}
		m.add(&netlink.Route{LinkIndex: idx, Dst: onlink, Src: local, Scope: netlink.SCOPE_LINK, Table: table, Protocol: unix.RTPROT_STATIC})
		gw := net.ParseIP(p.Gateway).To4()
		if gw == nil {
			gw = defaultGateway(nl, idx)
		}
		if gw != nil {
			m.add(&netlink.Route{LinkIndex: idx, Gw: gw, Src: local, Table: table, Protocol: unix.RTPROT_STATIC})
		} else if !onlink.Contains(remote) {
			m.remove()
			return nil, fmt.Errorf("paths[%d] (%s): remote %s is not on-link of %s and no gateway is configured or found in the main table (set paths[%d].gateway)",
				i, p.Name, p.Remote, l.link.Attrs().Name, i)
		}
		rule := netlink.NewRule()
		rule.Src = &net.IPNet{IP: local, Mask: net.CIDRMask(32, 32)}
		rule.Table = table
		rule.Priority = cfg.RulePriority
		rule.Family = netlink.FAMILY_V4
		_ = nl.RuleDel(rule) // a rule left by a crashed run
		if err := nl.RuleAdd(rule); err != nil {
			m.remove()
			return nil, fmt.Errorf("paths[%d] (%s): rule from %s lookup %d: %w", i, p.Name, p.Local, table, err)
		}
		m.rules = append(m.rules, rule)
	}
	for _, r := range m.routes {
		if err := nl.RouteReplace(r); err != nil {
			m.remove()
			return nil, fmt.Errorf("route %v table %d: %w", r.Dst, r.Table, err)
		}
	}
	return m, nil
}

func (m *managedRouting) add(r *netlink.Route) { m.routes = append(m.routes, r) }

func defaultGateway(nl *netlink.Handle, linkIndex int) net.IP {
	routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: linkIndex, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil
	}
	for _, r := range routes {
		if r.Gw != nil && (r.Dst == nil || r.Dst.IP.IsUnspecified()) {
			return r.Gw
		}
	}
	return nil
}

// remove deletes what was installed; missing entries are not errors.
func (m *managedRouting) remove() error {
	if m == nil {
		return nil
	}
	var errs []error
	for _, r := range m.rules {
		if err := m.nl.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("rule from %v: %w", r.Src, err))
		}
	}
	for _, r := range m.routes {
		if err := m.nl.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("route %v table %d: %w", r.Dst, r.Table, err))
		}
	}
	m.rules, m.routes = nil, nil
	return errors.Join(errs...)
}
