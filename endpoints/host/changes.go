package host

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// Changes makes changes to a Host and remembers how to undo each; Undo
// restores the host in reverse order. A role makes all its changes through
// one Changes and undoes it when it stops, whatever the reason.
type Changes struct {
	h    Host
	mu   sync.Mutex
	undo []undoStep
}

type undoStep struct {
	key string // identifies the change, so a later Del can drop its undo
	do  func() error
}

// NewChanges starts an empty set of changes to h.
func NewChanges(h Host) *Changes { return &Changes{h: h} }

// Host is the host the changes go to.
func (c *Changes) Host() Host { return c.h }

func (c *Changes) push(key string, do func() error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.undo {
		if s.key == key {
			return // undone once is enough
		}
	}
	c.undo = append(c.undo, undoStep{key, do})
}

func (c *Changes) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, s := range c.undo {
		if s.key == key {
			c.undo = append(c.undo[:i], c.undo[i+1:]...)
			return
		}
	}
}

// ReplaceAddr adds (or replaces) an address; Undo deletes it.
func (c *Changes) ReplaceAddr(link string, p netip.Prefix) error {
	if err := c.h.ReplaceAddr(link, p); err != nil {
		return err
	}
	c.push("addr "+link+" "+p.String(), func() error { return c.h.DelAddr(link, p) })
	return nil
}

// DelAddr deletes an address added through c.
func (c *Changes) DelAddr(link string, p netip.Prefix) error {
	c.drop("addr " + link + " " + p.String())
	return c.h.DelAddr(link, p)
}

// ReplaceRoute adds (or replaces) a route; Undo deletes it.
func (c *Changes) ReplaceRoute(r Route) error {
	if err := c.h.ReplaceRoute(r); err != nil {
		return err
	}
	c.push("route "+r.String(), func() error { return c.h.DelRoute(r) })
	return nil
}

// DelRoute deletes a route added through c.
func (c *Changes) DelRoute(r Route) error {
	c.drop("route " + r.String())
	return c.h.DelRoute(r)
}

// AddRule adds a rule; Undo deletes it.
func (c *Changes) AddRule(r Rule) error {
	if err := c.h.AddRule(r); err != nil {
		return err
	}
	c.push("rule "+r.String(), func() error { return c.h.DelRule(r) })
	return nil
}

// SetLinkMaster enslaves a link to a bridge; Undo frees it again (a link
// deleted meanwhile is no error).
func (c *Changes) SetLinkMaster(link, master string) error {
	if err := c.h.SetLinkMaster(link, master); err != nil {
		return err
	}
	c.push("master "+link, func() error {
		if err := c.h.SetLinkMaster(link, ""); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return nil
	})
	return nil
}

// DelRule deletes a rule added through c.
func (c *Changes) DelRule(r Rule) error {
	c.drop("rule " + r.String())
	return c.h.DelRule(r)
}

// SetSysctl writes a sysctl; Undo writes back the value it had before. A
// value already in place is not a change.
func (c *Changes) SetSysctl(key, value string) error {
	old, err := c.h.Sysctl(key)
	if err != nil {
		return fmt.Errorf("sysctl %s: %w", key, err)
	}
	if old == value {
		return nil
	}
	if err := c.h.SetSysctl(key, value); err != nil {
		return err
	}
	c.push("sysctl "+key, func() error { return c.h.SetSysctl(key, old) })
	return nil
}

// Undo reverts every change, newest first, and forgets them. It goes on
// past errors and returns them all.
func (c *Changes) Undo() error {
	c.mu.Lock()
	steps := c.undo
	c.undo = nil
	c.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := steps[i].do(); err != nil {
			errs = append(errs, fmt.Errorf("undo %s: %w", steps[i].key, err))
		}
	}
	return errors.Join(errs...)
}

// Len is how many changes are waiting to be undone.
func (c *Changes) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.undo)
}

// RemoveLeftovers deletes the rules marked as tunbond's (Protocol) whose
// source is one of srcs, and the tunbond routes in the tables those rules
// pointed to: what a killed run with the same addresses left, whatever its
// route_table and rule_priority were. It returns what it removed.
func RemoveLeftovers(h Host, srcs []netip.Prefix) ([]string, error) {
	rules, err := h.Rules()
	if err != nil {
		return nil, fmt.Errorf("listing rules: %w", err)
	}
	want := map[netip.Prefix]bool{}
	for _, s := range srcs {
		want[s.Masked()] = true
	}
	var removed []string
	var errs []error
	tables := map[int]bool{}
	for _, r := range rules {
		if r.Protocol != Protocol || !want[r.Src.Masked()] {
			continue
		}
		if err := h.DelRule(r); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "rule "+r.String())
		tables[r.Table] = true
	}
	for t := range tables {
		routes, err := h.Routes(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range routes {
			if r.Protocol != Protocol {
				continue
			}
			if err := h.DelRoute(r); err != nil {
				errs = append(errs, err)
				continue
			}
			removed = append(removed, "route "+r.String())
		}
	}
	return removed, errors.Join(errs...)
}
