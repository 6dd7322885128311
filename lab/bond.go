package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/tunbond/tunbond/endpoints/bond"
)

// BondSpec describes a two-site bond over direct veth uplinks.
type BondSpec struct {
	Weights   []int64 // one per uplink
	Encap     string  // gre (default) | ipip
	Scheduler string  // wrr (default)
	Key       int64
	Reorder   time.Duration // reorder.timeout; 0: 50ms
	Log       *slog.Logger  // nil: discard
}

// Bond addresses: uplink i is 10.100.i.1/30 (site A) ↔ 10.100.i.2/30 (site
// B); the bond is 10.77.0.1/30 ↔ 10.77.0.2/30.
const (
	BondAddrA = "10.77.0.1"
	BondAddrB = "10.77.0.2"
)

// UplinkName is the interface name of uplink i on both sites.
func UplinkName(i int) string { return fmt.Sprintf("ul%d", i) }

func uplinkAddr(i, side int) string { return fmt.Sprintf("10.100.%d.%d", i, side) }

// BondTopology is site A and site B joined by n veth uplinks.
func BondTopology(n int) Topology {
	t := Topology{Namespaces: []string{"a", "b"}}
	for i := 0; i < n; i++ {
		t.Links = append(t.Links, Link{
			A: End{NS: "a", Name: UplinkName(i), Addr: uplinkAddr(i, 1) + "/30"},
			B: End{NS: "b", Name: UplinkName(i), Addr: uplinkAddr(i, 2) + "/30"},
		})
	}
	return t
}

// Bond is a running two-site bond.
type Bond struct {
	Net  *Net
	A, B *bond.Endpoint
}

// EndpointConfig returns the config of one site (side 1 = A, 2 = B).
func (s BondSpec) EndpointConfig(side int) *bond.Config {
	c := &bond.Config{}
	c.TUN.Name = "bond0"
	c.TUN.Address = map[int]string{1: BondAddrA, 2: BondAddrB}[side] + "/30"
	c.Encap = s.Encap
	if c.Encap == "" {
		c.Encap = "gre"
	}
	c.Key = s.Key
	if c.Key == 0 {
		c.Key = 7
	}
	c.Scheduler = s.Scheduler
	if c.Scheduler == "" {
		c.Scheduler = "wrr"
	}
	c.BatchSize = 64
	c.Reorder.Window = 4096
	c.Reorder.Timeout = s.Reorder
	if c.Reorder.Timeout == 0 {
		c.Reorder.Timeout = 50 * time.Millisecond
	}
	c.Reorder.LossGrace = time.Millisecond
	c.Reorder.Adaptive = true
	c.Keepalive.Interval = 200 * time.Millisecond
	c.Keepalive.Misses = 3
	c.Routing = "manage"
	c.RouteTable = 7700
	c.RulePriority = 7700
	for i, w := range s.Weights {
		c.Paths = append(c.Paths, bond.PathConfig{
			Name: UplinkName(i), Local: uplinkAddr(i, side), Remote: uplinkAddr(i, 3-side),
			Device: UplinkName(i), Weight: w,
		})
	}
	return c
}

// StartBond builds the topology and starts both endpoints, and waits until
// every path is up on both sides.
func StartBond(ctx context.Context, id string, s BondSpec) (*Bond, error) {
	net, err := BondTopology(len(s.Weights)).Build(id)
	if err != nil {
		return nil, err
	}
	b, err := StartBondOn(ctx, net, s)
	if err != nil {
		net.Close()
		return nil, err
	}
	return b, nil
}

// StartBondOn starts the two endpoints on a built bond topology. Stop
// closes them and leaves the topology.
func StartBondOn(ctx context.Context, net *Net, s BondSpec) (_ *Bond, err error) {
	b := &Bond{Net: net}
	defer func() {
		if err != nil {
			b.Stop()
		}
	}()
	log := s.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for side, ns := range []*Namespace{1: net.NS("a"), 2: net.NS("b")} {
		if ns == nil {
			continue
		}
		cfg := s.EndpointConfig(side)
		if err := cfg.Validate(); err != nil {
			return nil, err
		}
		ep, err := bond.StartEndpoint(cfg, ns.Host(), log.With("site", ns.Name))
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", ns.Name, err)
		}
		if side == 1 {
			b.A = ep
		} else {
			b.B = ep
		}
	}
	for i := range s.Weights {
		for _, ep := range []*bond.Endpoint{b.A, b.B} {
			if err := ep.Engine().WaitPath(ctx, UplinkName(i), true); err != nil {
				return nil, err
			}
		}
	}
	return b, nil
}

// Stop stops both endpoints (removing their TUNs, routes and rules).
func (b *Bond) Stop() error {
	var errs []error
	for _, ep := range []*bond.Endpoint{b.A, b.B} {
		if ep != nil {
			errs = append(errs, ep.Close())
		}
	}
	b.A, b.B = nil, nil
	return errors.Join(errs...)
}

// Close stops both endpoints and deletes the namespaces.
func (b *Bond) Close() error {
	return errors.Join(b.Stop(), b.Net.Close())
}
