// Package host is every privileged change tunbond makes to the machine it
// runs on (links, addresses, routes, rules, sysctls) behind one interface,
// in the manner of seesaw's ncc: Netlink is the real thing, over
// vishvananda/netlink in one network namespace; hosttest.Recorder is a fake
// that keeps the state in memory and records each call; Changes applies
// changes through either and undoes them in reverse when a role stops, so
// nothing tunbond changed outlives it.
package host

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Protocol is the routing protocol number tunbond marks its routes and
// rules with (`ip route show proto 201`; name it in
// /etc/iproute2/rt_protos.d/tunbond.conf as "201 tunbond"). A start removes
// what an earlier, killed run left by this mark, and only that.
const Protocol = 201

// ErrNotFound is returned for a link that does not exist.
var ErrNotFound = errors.New("not found")

// Host is the network namespace a role runs in and the changes it may make.
// Deleting what is not there is not an error.
type Host interface {
	// Do runs f on a thread inside the namespace: sockets and TUN devices
	// belong to the namespace of the thread that creates them.
	Do(f func() error) error

	Link(name string) (Link, error)
	// LinkByAddr finds the interface that holds address a, with a's prefix there.
	LinkByAddr(a netip.Addr) (Link, netip.Prefix, error)
	// LinkAddrs lists the global addresses of a link (IPv4 and IPv6), with
	// their prefixes, in the kernel's order.
	LinkAddrs(name string) ([]netip.Prefix, error)
	// Watch returns a channel that receives after links or addresses
	// changed in the namespace (changes coalesce: one receive may stand for
	// many), until done is closed.
	Watch(done <-chan struct{}) (<-chan struct{}, error)
	SetLinkUp(name string) error
	SetLinkMTU(name string, mtu int) error
	// SetLinkMaster enslaves a link to a bridge (master ""; none: frees it).
	SetLinkMaster(name, master string) error

	ReplaceAddr(link string, p netip.Prefix) error
	DelAddr(link string, p netip.Prefix) error

	ReplaceRoute(r Route) error
	DelRoute(r Route) error
	// Routes lists a table's routes (0: main), IPv4 and IPv6.
	Routes(table int) ([]Route, error)

	AddRule(r Rule) error
	DelRule(r Rule) error
	Rules() ([]Rule, error)

	// Sysctl reads and SetSysctl writes a key under /proc/sys, in sysctl's
	// dotted form (net.ipv4.conf.all.rp_filter).
	Sysctl(key string) (string, error)
	SetSysctl(key, value string) error
}

// Link is a network interface.
type Link struct {
	Name  string
	Index int
	MTU   int
	Up    bool
}

// Scope of a route.
type Scope uint8

const (
	ScopeUniverse Scope = 0
	ScopeLink     Scope = 253
)

// Route is a route in one table.
type Route struct {
	Dst      netip.Prefix // the zero Prefix: default
	Gateway  netip.Addr
	Src      netip.Addr // preferred source
	Link     string
	Table    int // 0: main
	Scope    Scope
	Protocol int // 0 when writing: Protocol (tunbond's)
	// Blackhole drops what the route matches, silently (`ip route add
	// blackhole`); Link and Gateway are then empty.
	Blackhole bool
}

// Rule is a policy routing rule "from Src lookup Table".
type Rule struct {
	Priority int
	Src      netip.Prefix
	Table    int
	Protocol int // 0 when writing: Protocol
}

// String prints r as `ip route` would.
func (r Route) String() string {
	var b strings.Builder
	if r.Blackhole {
		b.WriteString("blackhole ")
	}
	if r.Dst.IsValid() {
		b.WriteString(r.Dst.Masked().String())
	} else {
		b.WriteString("default")
	}
	if r.Gateway.IsValid() {
		fmt.Fprintf(&b, " via %v", r.Gateway)
	}
	if r.Link != "" {
		fmt.Fprintf(&b, " dev %s", r.Link)
	}
	if r.Table != 0 {
		fmt.Fprintf(&b, " table %d", r.Table)
	}
	fmt.Fprintf(&b, " proto %d", r.protocol())
	if r.Scope == ScopeLink {
		b.WriteString(" scope link")
	}
	if r.Src.IsValid() {
		fmt.Fprintf(&b, " src %v", r.Src)
	}
	return b.String()
}

// String prints r as `ip rule` would.
func (r Rule) String() string {
	return fmt.Sprintf("%d: from %v lookup %d proto %d", r.Priority, r.Src, r.Table, r.protocol())
}

func (r Route) protocol() int { return orTunbond(r.Protocol) }
func (r Rule) protocol() int  { return orTunbond(r.Protocol) }

func orTunbond(p int) int {
	if p == 0 {
		return Protocol
	}
	return p
}

// Same reports whether two routes name the same entry (what the kernel
// matches a delete on).
func (r Route) Same(o Route) bool {
	return r.Dst.Masked() == o.Dst.Masked() && r.Table == o.Table && r.Link == o.Link && r.Gateway == o.Gateway
}

// Same reports whether two rules name the same entry.
func (r Rule) Same(o Rule) bool {
	return r.Priority == o.Priority && r.Src.Masked() == o.Src.Masked() && r.Table == o.Table
}
