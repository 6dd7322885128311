package host

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Netlink is a Host over netlink in one network namespace.
type Netlink struct {
	nl *netlink.Handle
	do func(func() error) error
}

// Current is the namespace tunbond was started in.
func Current() (*Netlink, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Netlink{nl: h, do: func(f func() error) error { return f() }}, nil
}

// NewNetlink is a Host over the handle nl of a namespace, with do running
// functions inside it (the lab's namespaces).
func NewNetlink(nl *netlink.Handle, do func(func() error) error) *Netlink {
	return &Netlink{nl: nl, do: do}
}

func (h *Netlink) Do(f func() error) error { return h.do(f) }

func (h *Netlink) toLink(l netlink.Link) Link {
	a := l.Attrs()
	return Link{Name: a.Name, Index: a.Index, MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
}

func (h *Netlink) Link(name string) (Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return Link{}, fmt.Errorf("link %s: %w", name, ErrNotFound)
		}
		return Link{}, fmt.Errorf("link %s: %w", name, err)
	}
	return h.toLink(l), nil
}

func (h *Netlink) LinkByAddr(a netip.Addr) (Link, netip.Prefix, error) {
	addrs, err := h.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return Link{}, netip.Prefix{}, fmt.Errorf("listing addresses: %w", err)
	}
	for _, x := range addrs {
		ip, ok := netip.AddrFromSlice(x.IP)
		if !ok || ip.Unmap() != a {
			continue
		}
		l, err := h.nl.LinkByIndex(x.LinkIndex)
		if err != nil {
			return Link{}, netip.Prefix{}, err
		}
		ones, _ := x.Mask.Size()
		return h.toLink(l), netip.PrefixFrom(a, ones), nil
	}
	return Link{}, netip.Prefix{}, fmt.Errorf("address %v: %w on any interface", a, ErrNotFound)
}

func (h *Netlink) link(name string) (netlink.Link, error) {
	l, err := h.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("link %s: %w", name, err)
	}
	return l, nil
}

func (h *Netlink) SetLinkUp(name string) error {
	l, err := h.link(name)
	if err != nil {
		return err
	}
	return h.nl.LinkSetUp(l)
}

func (h *Netlink) SetLinkMaster(name, master string) error {
	l, err := h.link(name)
	if err != nil {
		return err
	}
	if master == "" {
		return h.nl.LinkSetNoMaster(l)
	}
	m, err := h.link(master)
	if err != nil {
		return err
	}
	if _, ok := m.(*netlink.Bridge); !ok {
		return fmt.Errorf("link %s is a %s, not a bridge", master, m.Type())
	}
	return h.nl.LinkSetMaster(l, m)
}

func (h *Netlink) SetLinkMTU(name string, mtu int) error {
	l, err := h.link(name)
	if err != nil {
		return err
	}
	return h.nl.LinkSetMTU(l, mtu)
}

func ipnet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func (h *Netlink) ReplaceAddr(link string, p netip.Prefix) error {
	l, err := h.link(link)
	if err != nil {
		return err
	}
	return h.nl.AddrReplace(l, &netlink.Addr{IPNet: ipnet(p)})
}

func (h *Netlink) DelAddr(link string, p netip.Prefix) error {
	l, err := h.link(link)
	if err != nil {
		return nil // gone with its link
	}
	return ignoreMissing(h.nl.AddrDel(l, &netlink.Addr{IPNet: ipnet(p)}))
}

func (h *Netlink) toRoute(r Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipnet(r.Dst.Masked()), Table: r.Table, Scope: netlink.Scope(r.Scope), Protocol: netlink.RouteProtocol(r.protocol())}
	if r.Blackhole {
		nr.Type = unix.RTN_BLACKHOLE
	}
	if r.Link != "" {
		l, err := h.link(r.Link)
		if err != nil {
			return nil, err
		}
		nr.LinkIndex = l.Attrs().Index
	}
	if r.Gateway.IsValid() {
		nr.Gw = r.Gateway.AsSlice()
	}
	if r.Src.IsValid() {
		nr.Src = r.Src.AsSlice()
	}
	if nr.Dst == nil && r.Gateway.Is6() {
		nr.Family = netlink.FAMILY_V6
	}
	return nr, nil
}

func (h *Netlink) ReplaceRoute(r Route) error {
	nr, err := h.toRoute(r)
	if err != nil {
		return err
	}
	if err := h.nl.RouteReplace(nr); err != nil {
		return fmt.Errorf("route %v: %w", r, err)
	}
	return nil
}

func (h *Netlink) DelRoute(r Route) error {
	nr, err := h.toRoute(r)
	if err != nil {
		return nil // its link is gone, and the route with it
	}
	return ignoreMissing(h.nl.RouteDel(nr))
}

func (h *Netlink) Routes(table int) ([]Route, error) {
	if table == 0 {
		table = unix.RT_TABLE_MAIN
	}
	rs, err := h.nl.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, nr := range rs {
		r := Route{Table: nr.Table, Scope: Scope(nr.Scope), Protocol: int(nr.Protocol), Blackhole: nr.Type == unix.RTN_BLACKHOLE}
		if r.Table == unix.RT_TABLE_MAIN {
			r.Table = 0
		}
		if nr.Dst != nil {
			a, _ := netip.AddrFromSlice(nr.Dst.IP)
			ones, _ := nr.Dst.Mask.Size()
			if a.Unmap().IsUnspecified() && ones == 0 {
				r.Dst = netip.Prefix{}
			} else {
				r.Dst = netip.PrefixFrom(a.Unmap(), ones)
			}
		}
		if a, ok := netip.AddrFromSlice(nr.Gw); ok {
			r.Gateway = a.Unmap()
		}
		if a, ok := netip.AddrFromSlice(nr.Src); ok {
			r.Src = a.Unmap()
		}
		if nr.LinkIndex > 0 {
			if l, err := h.nl.LinkByIndex(nr.LinkIndex); err == nil {
				r.Link = l.Attrs().Name
			}
		}
		out = append(out, r)
	}
	return out, nil
}

func toRule(r Rule) *netlink.Rule {
	nr := netlink.NewRule()
	nr.Priority = r.Priority
	nr.Src = ipnet(r.Src)
	nr.Table = r.Table
	nr.Protocol = uint8(r.protocol())
	nr.Family = netlink.FAMILY_V4
	if r.Src.Addr().Is6() {
		nr.Family = netlink.FAMILY_V6
	}
	return nr
}

func (h *Netlink) AddRule(r Rule) error {
	if err := h.nl.RuleAdd(toRule(r)); err != nil {
		return fmt.Errorf("rule %v: %w", r, err)
	}
	return nil
}

func (h *Netlink) DelRule(r Rule) error {
	return ignoreMissing(h.nl.RuleDel(toRule(r)))
}

func (h *Netlink) Rules() ([]Rule, error) {
	rs, err := h.nl.RuleList(netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	out := make([]Rule, 0, len(rs))
	for _, nr := range rs {
		r := Rule{Priority: nr.Priority, Table: nr.Table, Protocol: int(nr.Protocol)}
		if nr.Src != nil {
			a, _ := netip.AddrFromSlice(nr.Src.IP)
			ones, _ := nr.Src.Mask.Size()
			r.Src = netip.PrefixFrom(a.Unmap(), ones)
		}
		out = append(out, r)
	}
	return out, nil
}

// sysctlPath maps sysctl's dotted key to its file; a key already in the
// slashed form passes as it is (for interface names with dots).
func sysctlPath(key string) string {
	if strings.Contains(key, "/") {
		return "/proc/sys/" + key
	}
	return "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
}

func (h *Netlink) Sysctl(key string) (v string, err error) {
	err = h.do(func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	return v, err
}

func (h *Netlink) SetSysctl(key, value string) error {
	return h.do(func() error {
		if err := os.WriteFile(sysctlPath(key), []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

func ignoreMissing(err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENODEV) {
		return nil
	}
	return err
}

func (h *Netlink) LinkAddrs(name string) ([]netip.Prefix, error) {
	l, err := h.link(name)
	if err != nil {
		return nil, err
	}
	addrs, err := h.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("link %s: listing addresses: %w", name, err)
	}
	var out []netip.Prefix
	for _, x := range addrs {
		ip, ok := netip.AddrFromSlice(x.IP)
		if !ok || x.Scope != int(netlink.SCOPE_UNIVERSE) || ip.Unmap().IsLinkLocalUnicast() {
			continue
		}
		ones, _ := x.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out, nil
}

// Watch subscribes to the namespace's link and address changes (rtnetlink
// groups; the sockets are opened inside the namespace).
func (h *Netlink) Watch(done <-chan struct{}) (<-chan struct{}, error) {
	links := make(chan netlink.LinkUpdate, 64)
	addrs := make(chan netlink.AddrUpdate, 64)
	out := make(chan struct{}, 1)
	if err := h.do(func() error {
		if err := netlink.LinkSubscribeWithOptions(links, done, netlink.LinkSubscribeOptions{}); err != nil {
			return fmt.Errorf("subscribing to link changes: %w", err)
		}
		if err := netlink.AddrSubscribeWithOptions(addrs, done, netlink.AddrSubscribeOptions{}); err != nil {
			return fmt.Errorf("subscribing to address changes: %w", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	go func() {
		for {
			select {
			case _, ok := <-links:
				if !ok {
					return
				}
			case _, ok := <-addrs:
				if !ok {
					return
				}
			case <-done:
				return
			}
			select {
			case out <- struct{}{}:
			default: // one is pending: it stands for this one too
			}
		}
	}()
	return out, nil
}
