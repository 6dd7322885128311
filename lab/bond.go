package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/lab/netns"
)

// BondSpec describes a two-site bond over direct veth uplinks.
type BondSpec struct {
	// NoWait starts the endpoints without waiting for their paths to come
	// up (a test of a path that cannot, yet).
	NoWait    bool
	Weights   []int64 // one per uplink
	Uplinks   int     // without Weights: this many uplinks with no weight set (what a config that sets none gets)
	Encap     string  // gre | ipip; the config default (gre) if empty
	Scheduler string  // the config default (adaptive) if empty
	Key       int64
	Transport string // gre | udp: every path's (paths[].transport); the config default (gre) if empty
	KeyFile   string // auth.key_file on both sites; "": no auth
	Encrypt   bool   // auth.encrypt
	// NAT lists the uplinks that cross a NAT (netns.NATSites): site A
	// reaches B's address behind it through its gateway, and site B's path
	// has no remote (learned: needs Transport udp and KeyFile).
	NAT []int
	// IPv6 lists the uplinks whose paths use their IPv6 addresses
	// (netns.UplinkAddr6) instead of their IPv4 ones.
	IPv6 []int
	// Mode is l3 (the default: the TUN) or l2: a TAP on each site's bridge,
	// joining the LAN hosts behind the sites (netns.WithLANs).
	Mode string
	Log  *slog.Logger // nil: discard
}

// Bond addresses: uplink i is 10.100.i.1/30 (site A) ↔ 10.100.i.2/30 (site
// B); the bond is 10.77.0.1/30 ↔ 10.77.0.2/30.
const (
	BondAddrA = "10.77.0.1"
	BondAddrB = "10.77.0.2"
)

// Bond is a running two-site bond.
type Bond struct {
	Net  *netns.Net
	A, B *bond.Bond
}

// EndpointConfig returns the config of one site (side 1 = A, 2 = B): the
// defaults a user's config file gets (bond.Defaults), with only the lab's
// topology and the spec's choices set on top. Nothing is tuned here that a
// config file would lack, so the lab measures what users run.
func (s BondSpec) EndpointConfig(side int) (*bond.Config, error) {
	c, err := bond.Defaults()
	if err != nil {
		return nil, err
	}
	c.TUN.Name = "bond0"
	c.TUN.Address = map[int]string{1: BondAddrA, 2: BondAddrB}[side] + "/30"
	if s.Mode == bond.ModeL2 {
		c.Mode, c.TUN.Address = bond.ModeL2, ""
		c.TAP.Name, c.TAP.Bridge = "tap0", netns.LANBridge
	}
	if s.Encap != "" {
		c.Encap = s.Encap
	}
	c.Key = s.Key
	if c.Key == 0 {
		c.Key = 7 // the key the capture test looks for
	}
	if s.Scheduler != "" {
		c.Scheduler = s.Scheduler
	}
	c.Routing = "manage"  // each uplink's tunnel leaves by its own uplink
	c.Control.Socket = "" // the two sites share one filesystem
	c.Auth.KeyFile, c.Auth.Encrypt = s.KeyFile, s.Encrypt
	natted := map[int]bool{}
	for _, i := range s.NAT {
		natted[i] = true
	}
	for i := 0; i < s.uplinks(); i++ {
		p := bond.PathDefaults() // what a path that sets nothing more gets
		p.Name, p.Device = netns.UplinkName(i), netns.UplinkName(i)
		p.Local, p.Remote = netns.UplinkAddr(i, side), netns.UplinkAddr(i, 3-side)
		if i < len(s.Weights) {
			p.Weight = s.Weights[i]
		}
		if s.Transport != "" {
			p.Transport = s.Transport
		}
		if slices.Contains(s.IPv6, i) {
			p.Local, p.Remote = netns.UplinkAddr6(i, side), netns.UplinkAddr6(i, 3-side)
		}
		if natted[i] && side == 1 {
			p.Remote, p.Gateway = netns.NATSiteB(i), netns.NATGateway(i)
		} else if natted[i] {
			p.Local, p.Remote = netns.NATSiteB(i), ""
		}
		c.Paths = append(c.Paths, p)
	}
	return c, c.Validate()
}

func (s BondSpec) uplinks() int { return max(len(s.Weights), s.Uplinks) }

// StartBond builds the topology and starts both endpoints, and waits until
// every path is up on both sides.
func StartBond(ctx context.Context, id string, s BondSpec) (*Bond, error) {
	topo := netns.Sites(s.uplinks())
	if len(s.NAT) > 0 {
		topo = netns.NATSites(s.uplinks(), s.NAT...)
	}
	if s.Mode == bond.ModeL2 {
		topo = netns.WithLANs(topo)
	}
	net, err := topo.Build(id)
	if err != nil {
		return nil, err
	}
	for _, i := range s.NAT {
		if err := net.StartNAT(i); err != nil {
			net.Close()
			return nil, err
		}
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
func StartBondOn(ctx context.Context, net *netns.Net, s BondSpec) (_ *Bond, err error) {
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
	for side, ns := range []*netns.Namespace{1: net.NS("a"), 2: net.NS("b")} {
		if ns == nil {
			continue
		}
		cfg, err := s.EndpointConfig(side)
		if err != nil {
			return nil, err
		}
		ep, err := bond.Start(cfg, bond.Deps{Host: ns.Host(), Log: log.With("site", ns.Name)})
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", ns.Name, err)
		}
		if side == 1 {
			b.A = ep
		} else {
			b.B = ep
		}
	}
	for i := 0; i < s.uplinks() && !s.NoWait; i++ {
		for _, ep := range []*bond.Bond{b.A, b.B} {
			if err := ep.Engine().WaitPath(ctx, netns.UplinkName(i), true); err != nil {
				return nil, err
			}
		}
	}
	if s.Mode == bond.ModeL2 {
		// As a user sets the LAN hosts' MTU to what the bond carries (a
		// frame is never fragmented: the bridge drops a larger one).
		if err := netns.SetLANMTU(net, min(b.A.MTU(), b.B.MTU())); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Stop stops both endpoints (removing their TUNs, routes and rules).
func (b *Bond) Stop() error {
	var errs []error
	for _, ep := range []*bond.Bond{b.A, b.B} {
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
