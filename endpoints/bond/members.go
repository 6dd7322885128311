package bond

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/tunnel/conn"
)

// members keeps each path's socket in its slot as the host changes: a path
// whose address or device is missing waits (logged once, `waiting` in ctl
// status and tunbond_path_waiting) and joins when it appears; one whose
// device is deleted and created again, or whose address moves (a path that
// names only its device), gets a new socket and rejoins, with its routing
// (routing: manage) installed again. It follows the host's link and
// address changes (host.Watch) and retries waiting paths every
// memberRetry, in case an open failed for a passing reason.
type members struct {
	cfg     *Config
	h       host.Host
	changes *host.Changes
	log     *slog.Logger
	open    func(i int, local netip.Addr) (conn.Uplink, error)
	slots   []*pathSlot
	routing []*pathRouting // routing: manage, per joined path
	links   []string       // the device each joined path's socket is on
	engine  *Engine        // set once the engine exists: SetLocal
	mtu     int            // the TUN's: a joining path's MTU is checked against it

	mu   sync.Mutex // serialises sync (start, the watcher)
	done chan struct{}
	wg   sync.WaitGroup
}

// memberRetry is how often waiting paths are tried again without a change
// from the host.
const memberRetry = time.Second

// resolved is where a path's socket goes: the link that holds its local
// address and that address with its prefix there.
type resolved struct {
	link  host.Link
	local netip.Addr
	pfx   netip.Prefix
}

// resolve finds path i's link and local address, or says why the path
// waits.
func (m *members) resolve(i int) (resolved, string) {
	p := m.cfg.Paths[i]
	if p.Local != "" {
		local := netip.MustParseAddr(p.Local)
		l, pfx, err := m.h.LinkByAddr(local)
		if err != nil {
			return resolved{}, fmt.Sprintf("local address %s is not on any interface", local)
		}
		if p.Device != "" && l.Name != p.Device {
			if _, err := m.h.Link(p.Device); err != nil {
				return resolved{}, fmt.Sprintf("device %s is missing", p.Device)
			}
		}
		return resolved{link: l, local: local, pfx: pfx}, ""
	}
	l, err := m.h.Link(p.Device)
	if err != nil {
		return resolved{}, fmt.Sprintf("device %s is missing", p.Device)
	}
	addrs, err := m.h.LinkAddrs(p.Device)
	if err != nil {
		return resolved{}, fmt.Sprintf("device %s: %v", p.Device, err)
	}
	remote, _ := netip.ParseAddr(p.Remote)
	var pick netip.Prefix
	for _, a := range addrs {
		switch {
		case remote.IsValid() && a.Addr().Is4() != remote.Is4():
		case !pick.IsValid(), !remote.IsValid() && a.Addr().Is4() && !pick.Addr().Is4(): // IPv4 first when the remote does not say
			pick = a
		}
	}
	if !pick.IsValid() {
		fam := "an address"
		if remote.IsValid() {
			fam = map[bool]string{true: "an IPv4 address", false: "an IPv6 address"}[remote.Is4()]
		}
		return resolved{}, fmt.Sprintf("device %s has no %s yet", p.Device, fam)
	}
	return resolved{link: l, local: pick.Addr(), pfx: pick}, ""
}

// sync brings every slot in line with the host: joins what can join, sends
// to waiting what lost its address or device, reopens what moved. strict
// (at start): a path whose address and device are there but whose socket
// or routing fails is an error, not a wait.
func (m *members) sync(strict bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, s := range m.slots {
		name := m.cfg.Paths[i].Name
		r, why := m.resolve(i)
		joined := s.Waiting() == ""
		if joined && why == "" && r.link.Index == s.ifindex && r.local == s.local {
			continue // as it was
		}
		if joined {
			if why != "" {
				m.leave(i, why)
				continue
			}
			m.leave(i, fmt.Sprintf("moved to %s on %s (device index %d)", r.local, r.link.Name, r.link.Index))
		}
		if why != "" {
			if s.Waiting() != why {
				m.log.Warn("path waiting", "path", name, "why", why)
				s.Wait(why)
			}
			continue
		}
		if err := m.join(i, r); err != nil {
			if strict {
				return fmt.Errorf("paths[%d] (%s): %w", i, name, err)
			}
			why := err.Error()
			if s.Waiting() != why {
				m.log.Warn("path waiting", "path", name, "why", why)
				s.Wait(why)
			}
		}
	}
	return nil
}

// join opens path i's socket at r and puts it in the slot.
func (m *members) join(i int, r resolved) error {
	p := m.cfg.Paths[i]
	u, err := m.open(i, r.local)
	if err != nil {
		return err
	}
	if m.cfg.Routing == "manage" {
		rt, err := installPathRouting(m.changes, m.cfg, i, r.link, r.local, r.pfx)
		if err != nil {
			u.Close()
			return err
		}
		m.routing[i] = rt
	}
	if m.engine != nil {
		_ = m.engine.setPathLocal(p.Name, r.local)
	}
	m.links[i] = r.link.Name
	first := m.slots[i].joins.Load() == 0
	m.slots[i].Join(u, r.link.Index, r.local)
	if !first {
		m.log.Info("path joined", "path", p.Name, "local", r.local, "device", r.link.Name)
	}
	if need := m.mtu + m.cfg.pathOverhead(i); m.mtu > 0 && r.link.MTU < need {
		m.log.Warn("path's device MTU is below what the TUN's MTU needs on it: large packets will not pass it",
			"path", p.Name, "device", r.link.Name, "mtu", r.link.MTU, "needed", need)
	}
	return nil
}

// leave takes path i's socket out and its routing away.
func (m *members) leave(i int, why string) {
	m.log.Warn("path waiting", "path", m.cfg.Paths[i].Name, "why", why)
	m.slots[i].Wait(why)
	if rt := m.routing[i]; rt != nil {
		if err := rt.remove(m.changes); err != nil {
			m.log.Warn("removing a path's routing", "path", m.cfg.Paths[i].Name, "err", err)
		}
		m.routing[i] = nil
	}
}

// watch follows the host until stop.
func (m *members) watch() error {
	m.done = make(chan struct{})
	changed, err := m.h.Watch(m.done)
	if err != nil {
		return err
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(memberRetry)
		defer t.Stop()
		for {
			select {
			case <-m.done:
				return
			case <-changed:
			case <-t.C:
				if !m.anyWaiting() {
					continue
				}
			}
			_ = m.sync(false) // never strict: what fails waits, logged
		}
	}()
	return nil
}

func (m *members) anyWaiting() bool {
	for _, s := range m.slots {
		if s.Waiting() != "" {
			return true
		}
	}
	return false
}

// stop ends the watcher (the slots are the engine's to close).
func (m *members) stop() {
	if m.done != nil {
		close(m.done)
		m.wg.Wait()
		m.done = nil
	}
}

// usable says which paths joined at start, or why none did.
func (m *members) usable() error {
	var why []string
	for i, s := range m.slots {
		if s.Waiting() == "" {
			return nil
		}
		why = append(why, fmt.Sprintf("paths[%d] (%s): %s", i, m.cfg.Paths[i].Name, s.Waiting()))
	}
	return errors.New("no path is usable: " + strings.Join(why, "; "))
}

// linkOf is the device joined path i is on.
func (m *members) linkOf(i int) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.links[i]
}
