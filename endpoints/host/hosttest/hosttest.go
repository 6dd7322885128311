// Package hosttest is a fake host.Host: the links, addresses, routes, rules
// and sysctls of a namespace kept in memory, every change recorded as one
// line in iproute2's words, so a role's host changes and their undoing are
// tested without root.
package hosttest

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"github.com/tunbond/tunbond/endpoints/host"
)

// Recorder is an in-memory host. The zero value is not usable: use New.
type Recorder struct {
	mu      sync.Mutex
	links   map[string]*host.Link
	masters map[string]string // link → the bridge it is enslaved to
	addrs   map[string][]netip.Prefix
	routes  []host.Route
	rules   []host.Rule
	sysctls map[string]string
	calls   []string
	index   int             // the last link index handed out
	watches []chan struct{} // Watch's channels
	// Fail makes the next call of an operation ("route replace", "rule add",
	// "addr replace", "sysctl", "link up", "link mtu") fail with the error.
	Fail map[string]error
}

// New returns a host with a loopback and the given links (all down, MTU 1500).
func New(links ...string) *Recorder {
	r := &Recorder{links: map[string]*host.Link{}, masters: map[string]string{}, addrs: map[string][]netip.Prefix{},
		sysctls: map[string]string{}, Fail: map[string]error{}}
	r.AddLink("lo", 65536)
	for _, l := range links {
		r.AddLink(l, 1500)
	}
	return r
}

// AddLink makes a link appear (as a device created outside tunbond would),
// with the per-link sysctls that net.ipv4.conf.default.* preset, as the
// kernel gives a new device.
func (r *Recorder) AddLink(name string, mtu int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index++
	r.links[name] = &host.Link{Name: name, Index: r.index, MTU: mtu}
	r.notifyLocked()
	for k, v := range r.sysctls {
		if rest, ok := strings.CutPrefix(k, "net.ipv4.conf.default."); ok {
			r.sysctls["net.ipv4.conf."+name+"."+rest] = v
		}
	}
}

// RemoveLink makes a link disappear with its addresses, routes and
// per-link sysctls (net.ipv4.conf.<name>.*), as the kernel does.
func (r *Recorder) RemoveLink(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.links, name)
	delete(r.masters, name)
	delete(r.addrs, name)
	r.notifyLocked()
	for k := range r.sysctls {
		if strings.Contains(k, ".conf."+name+".") {
			delete(r.sysctls, k)
		}
	}
	kept := r.routes[:0]
	for _, rt := range r.routes {
		if rt.Link != name {
			kept = append(kept, rt)
		}
	}
	r.routes = kept
}

// SetSysctlValue presets a sysctl as the system had it.
func (r *Recorder) SetSysctlValue(key, value string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sysctls[key] = value
}

// Calls returns the changes made so far, one line each.
func (r *Recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// State prints the host's addresses, routes, rules and sysctls, sorted:
// compare it before and after to see that nothing leaked.
func (r *Recorder) State() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for l, ps := range r.addrs {
		for _, p := range ps {
			s = append(s, fmt.Sprintf("addr %v dev %s", p, l))
		}
	}
	for _, rt := range r.routes {
		s = append(s, "route "+rt.String())
	}
	for _, ru := range r.rules {
		s = append(s, "rule "+ru.String())
	}
	for k, v := range r.sysctls {
		s = append(s, "sysctl "+k+"="+v)
	}
	for _, l := range r.links {
		line := fmt.Sprintf("link %s mtu %d up %v", l.Name, l.MTU, l.Up)
		if m := r.masters[l.Name]; m != "" {
			line += " master " + m
		}
		s = append(s, line)
	}
	sort.Strings(s)
	return s
}

func (r *Recorder) call(op, format string, a ...any) error {
	r.calls = append(r.calls, op+" "+fmt.Sprintf(format, a...))
	if err := r.Fail[op]; err != nil {
		delete(r.Fail, op)
		return err
	}
	return nil
}

// Do runs f at once: a Recorder is the current namespace.
func (r *Recorder) Do(f func() error) error { return f() }

func (r *Recorder) Link(name string) (host.Link, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.links[name]
	if !ok {
		return host.Link{}, fmt.Errorf("link %s: %w", name, host.ErrNotFound)
	}
	return *l, nil
}

func (r *Recorder) LinkByAddr(a netip.Addr) (host.Link, netip.Prefix, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, ps := range r.addrs {
		for _, p := range ps {
			if p.Addr() == a {
				return *r.links[name], p, nil
			}
		}
	}
	return host.Link{}, netip.Prefix{}, fmt.Errorf("address %v: %w on any interface", a, host.ErrNotFound)
}

func (r *Recorder) linkLocked(name string) (*host.Link, error) {
	l, ok := r.links[name]
	if !ok {
		return nil, fmt.Errorf("link %s: %w", name, host.ErrNotFound)
	}
	return l, nil
}

func (r *Recorder) SetLinkUp(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("link up", "%s", name); err != nil {
		return err
	}
	l, err := r.linkLocked(name)
	if err != nil {
		return err
	}
	l.Up = true
	return nil
}

func (r *Recorder) SetLinkMaster(name, master string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	what := "master " + master
	if master == "" {
		what = "nomaster"
	}
	if err := r.call("link master", "%s %s", name, what); err != nil {
		return err
	}
	if _, err := r.linkLocked(name); err != nil {
		return err
	}
	if master != "" {
		if _, err := r.linkLocked(master); err != nil {
			return err
		}
	}
	r.masters[name] = master
	return nil
}

func (r *Recorder) SetLinkMTU(name string, mtu int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("link mtu", "%s %d", name, mtu); err != nil {
		return err
	}
	l, err := r.linkLocked(name)
	if err != nil {
		return err
	}
	l.MTU = mtu
	return nil
}

func (r *Recorder) ReplaceAddr(link string, p netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("addr replace", "%v dev %s", p, link); err != nil {
		return err
	}
	if _, err := r.linkLocked(link); err != nil {
		return err
	}
	for _, x := range r.addrs[link] {
		if x == p {
			return nil
		}
	}
	r.addrs[link] = append(r.addrs[link], p)
	r.notifyLocked()
	return nil
}

func (r *Recorder) DelAddr(link string, p netip.Prefix) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("addr del", "%v dev %s", p, link); err != nil {
		return err
	}
	ps := r.addrs[link]
	for i, x := range ps {
		if x == p {
			r.addrs[link] = append(ps[:i], ps[i+1:]...)
			if len(r.addrs[link]) == 0 {
				delete(r.addrs, link)
			}
			r.notifyLocked()
			break
		}
	}
	return nil
}

func withProto(p int) int {
	if p == 0 {
		return host.Protocol
	}
	return p
}

func (r *Recorder) ReplaceRoute(rt host.Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("route replace", "%v", rt); err != nil {
		return err
	}
	if rt.Link != "" {
		if _, err := r.linkLocked(rt.Link); err != nil {
			return err
		}
	}
	rt.Protocol = withProto(rt.Protocol)
	for i, x := range r.routes {
		if x.Dst.Masked() == rt.Dst.Masked() && x.Table == rt.Table {
			r.routes[i] = rt
			return nil
		}
	}
	r.routes = append(r.routes, rt)
	return nil
}

func (r *Recorder) DelRoute(rt host.Route) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("route del", "%v", rt); err != nil {
		return err
	}
	for i, x := range r.routes {
		if x.Same(rt) {
			r.routes = append(r.routes[:i], r.routes[i+1:]...)
			break
		}
	}
	return nil
}

func (r *Recorder) Routes(table int) ([]host.Route, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []host.Route
	for _, x := range r.routes {
		if x.Table == table {
			out = append(out, x)
		}
	}
	return out, nil
}

// ErrExists is what adding a rule that is there already returns (EEXIST).
var ErrExists = errors.New("file exists")

func (r *Recorder) AddRule(ru host.Rule) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("rule add", "%v", ru); err != nil {
		return err
	}
	ru.Protocol = withProto(ru.Protocol)
	for _, x := range r.rules {
		if x.Same(ru) {
			return ErrExists
		}
	}
	r.rules = append(r.rules, ru)
	return nil
}

func (r *Recorder) DelRule(ru host.Rule) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("rule del", "%v", ru); err != nil {
		return err
	}
	for i, x := range r.rules {
		if x.Same(ru) {
			r.rules = append(r.rules[:i], r.rules[i+1:]...)
			break
		}
	}
	return nil
}

func (r *Recorder) Rules() ([]host.Rule, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]host.Rule(nil), r.rules...), nil
}

func (r *Recorder) Sysctl(key string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.sysctls[key]
	if !ok {
		return "", fmt.Errorf("sysctl %s: %w", key, host.ErrNotFound)
	}
	return v, nil
}

func (r *Recorder) SetSysctl(key, value string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.call("sysctl", "%s=%s", key, value); err != nil {
		return err
	}
	r.sysctls[key] = value
	return nil
}

var _ host.Host = (*Recorder)(nil)

func (r *Recorder) LinkAddrs(name string) ([]netip.Prefix, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.linkLocked(name); err != nil {
		return nil, err
	}
	return append([]netip.Prefix(nil), r.addrs[name]...), nil
}

// Watch returns a channel that receives after every change of links or
// addresses (AddLink, RemoveLink, ReplaceAddr, DelAddr).
func (r *Recorder) Watch(done <-chan struct{}) (<-chan struct{}, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{}, 1)
	r.watches = append(r.watches, ch)
	return ch, nil
}

func (r *Recorder) notifyLocked() {
	for _, ch := range r.watches {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}
