package netns

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Topology describes namespaces, the veth links between them, addresses and
// routes. Namespace names are logical ("a", "b"); Build prefixes them with a
// run id so runs and tests never collide.
type Topology struct {
	Namespaces []string
	Links      []Link
	Bridges    []Bridge // made after the links, before the routes
	Routes     []Route
}

// Link is a veth pair.
type Link struct {
	A, B End
	MTU  int // 0: 1500
}

// End is one side of a link: its namespace, interface name and addresses.
type End struct {
	NS, Name, Addr string // Addr with prefix, e.g. 10.100.0.1/30; may be empty
	Addr6          string // an IPv6 address with prefix, e.g. fd00:100:0::1/64 (no duplicate address detection); may be empty
}

// Route is a route in a namespace: to Dst ("default" or a prefix) via a
// gateway, or on-link out of Dev.
type Route struct {
	NS, Dst, Via, Dev string
}

// Net is a built topology.
type Net struct {
	ID string
	ns map[string]*Namespace
	// order to delete in
	all []*Namespace
}

// Build creates everything; on error it removes what it made.
func (t Topology) Build(id string) (_ *Net, err error) {
	n := &Net{ID: id, ns: map[string]*Namespace{}}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	for _, name := range t.Namespaces {
		ns, err := New(fmt.Sprintf("tb-%s-%s", id, name))
		if err != nil {
			return nil, err
		}
		n.ns[name] = ns
		n.all = append(n.all, ns)
	}
	for _, l := range t.Links {
		if err := n.addLink(l); err != nil {
			return nil, err
		}
	}
	for _, b := range t.Bridges {
		if err := n.addBridge(b); err != nil {
			return nil, err
		}
	}
	for _, r := range t.Routes {
		if err := n.addRoute(r); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// NS returns the namespace with the logical name.
func (n *Net) NS(name string) *Namespace { return n.ns[name] }

func (n *Net) addLink(l Link) error {
	a, b := n.ns[l.A.NS], n.ns[l.B.NS]
	if a == nil || b == nil {
		return fmt.Errorf("link %s-%s: unknown namespace", l.A.NS, l.B.NS)
	}
	mtu := l.MTU
	if mtu == 0 {
		mtu = 1500
	}
	// Created from the first namespace, with the peer placed straight into
	// the second: the names never meet in a shared namespace.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.A.Name, MTU: mtu}, PeerName: l.B.Name,
		PeerNamespace: netlink.NsFd(int(b.h))}
	if err := a.NL.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s/%s - %s/%s: %w", l.A.NS, l.A.Name, l.B.NS, l.B.Name, err)
	}
	for _, e := range []struct {
		ns  *Namespace
		end End
	}{{a, l.A}, {b, l.B}} {
		link, err := e.ns.NL.LinkByName(e.end.Name)
		if err != nil {
			return err
		}
		if err := e.ns.NL.LinkSetMTU(link, mtu); err != nil {
			return err
		}
		for _, a := range []string{e.end.Addr, e.end.Addr6} {
			if a == "" {
				continue
			}
			addr, err := netlink.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("%s/%s: %w", e.end.NS, e.end.Name, err)
			}
			addr.Flags = unix.IFA_F_NODAD // usable at once: no tentative phase
			if err := e.ns.NL.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("%s/%s address %s: %w", e.end.NS, e.end.Name, a, err)
			}
		}
		if err := e.ns.NL.LinkSetUp(link); err != nil {
			return err
		}
	}
	return nil
}

func (n *Net) addRoute(r Route) error {
	ns := n.ns[r.NS]
	if ns == nil {
		return fmt.Errorf("route in unknown namespace %s", r.NS)
	}
	rt := &netlink.Route{}
	if r.Dst != "default" {
		_, dst, err := net.ParseCIDR(r.Dst)
		if err != nil {
			return fmt.Errorf("route %s: %w", r.Dst, err)
		}
		rt.Dst = dst
	}
	if r.Via != "" {
		rt.Gw = net.ParseIP(r.Via)
	}
	if r.Dev != "" {
		l, err := ns.NL.LinkByName(r.Dev)
		if err != nil {
			return err
		}
		rt.LinkIndex = l.Attrs().Index
	}
	if err := ns.NL.RouteAdd(rt); err != nil {
		return fmt.Errorf("%s: route %s via %s dev %s: %w", r.NS, r.Dst, r.Via, r.Dev, err)
	}
	return nil
}

// SetLinkUp sets an interface of a namespace up or down.
func (n *Net) SetLinkUp(ns, name string, up bool) error {
	s := n.ns[ns]
	l, err := s.NL.LinkByName(name)
	if err != nil {
		return err
	}
	if up {
		return s.NL.LinkSetUp(l)
	}
	return s.NL.LinkSetDown(l)
}

// Close deletes every namespace of the run.
func (n *Net) Close() error {
	var errs []error
	for i := len(n.all) - 1; i >= 0; i-- {
		errs = append(errs, n.all[i].Close())
	}
	n.all = nil
	return errors.Join(errs...)
}

// Leftovers lists namespaces of lab runs (named tb-...) that still exist,
// for teardown checks.
func Leftovers(id string) ([]string, error) {
	entries, err := listNetns()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e, "tb-"+id) {
			out = append(out, e)
		}
	}
	return out, nil
}

// Bridge is a Linux bridge in a namespace with its ports (interfaces of
// that namespace, made by the topology's links), up, without an address.
type Bridge struct {
	NS, Name string
	Ports    []string
}

func (n *Net) addBridge(b Bridge) error {
	ns := n.ns[b.NS]
	if ns == nil {
		return fmt.Errorf("bridge %s in unknown namespace %s", b.Name, b.NS)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name}}
	if err := ns.NL.LinkAdd(br); err != nil {
		return fmt.Errorf("%s: bridge %s: %w", b.NS, b.Name, err)
	}
	for _, p := range b.Ports {
		l, err := ns.NL.LinkByName(p)
		if err != nil {
			return fmt.Errorf("%s: bridge %s port %s: %w", b.NS, b.Name, p, err)
		}
		if err := ns.NL.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("%s: bridge %s port %s: %w", b.NS, b.Name, p, err)
		}
	}
	return ns.NL.LinkSetUp(br)
}
