// Package bond is the bond role (`tunbond endpoint`): one end of a bond of
// several uplinks into one link. Start sets up the host and runs the engine,
// the data plane, whose jobs each have a file: tx.go (TUN → scheduler →
// uplinks), rx.go (uplinks → reorder; keepalive probes and replies),
// deliver.go (reorder buffer → TUN), health.go (keepalives, path state,
// the adaptive reorder timeout), status.go (paths' status and weights),
// control.go (the control socket of `tunbond ctl`) and metrics.go.
package bond

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/endpoints/ctlsock"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/role"
	"github.com/tunbond/tunbond/reorder"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"
)

// Deps are what the bond runs on: the host it changes, how it opens its TUN
// and its uplinks, where its metrics go, its log and its clock. The zero
// value is the real thing in the current namespace; tests pass fakes.
type Deps struct {
	Host       host.Host                                      // nil: host.Current() in this namespace
	OpenTUN    func(name string, mtu int) (tun.Device, error) // nil: tun.CreateTUN inside Host.Do
	OpenTAP    func(name string, mtu int) (tun.Device, error) // mode l2; nil: a water TAP inside Host.Do
	OpenUplink func(conn.RawConfig) (conn.Uplink, error)      // nil: conn.OpenRaw inside Host.Do
	OpenUDP    func(conn.UDPConfig) (conn.Uplink, error)      // nil: conn.OpenUDP inside Host.Do
	Metrics    prometheus.Registerer                          // nil: none; the bond registers its collector here
	Log        *slog.Logger                                   // nil: slog.Default()
	Now        func() time.Time                               // nil: time.Now
}

// Bond is a running bond endpoint: the engine (the data plane) and what it
// changed on the host (TUN address, routes and rules), its control socket
// and its metrics, all of which Close removes.
type Bond struct {
	cfg       *Config
	log       *slog.Logger
	host      host.Host
	changes   *host.Changes
	engine    *Engine
	members   *members // the paths' sockets as the host's links and addresses come and go
	control   *ctlsock.Server
	metrics   prometheus.Registerer
	mtu       int
	closeOnce sync.Once
	closeErr  error
}

// Run runs a bond until ctx ends or the bond stops by itself (its TUN
// deleted): Start, wait, Close. It returns why the bond stopped by itself
// (nil when ctx ended) joined with what Close could not undo.
func Run(ctx context.Context, cfg *Config, deps Deps) error {
	return role.Run(ctx, func() (*Bond, error) { return Start(cfg, deps) })
}

// Start sets up the host and starts the bond: it removes what an earlier,
// killed run left (tunbond's rules and routes for the paths' addresses),
// opens the uplinks and the TUN, gives the TUN its MTU and address, and
// with `routing: manage` a table and a rule per path. Every change goes
// through one host.Changes, which Close undoes. On error nothing is left.
func Start(cfg *Config, deps Deps) (_ *Bond, err error) {
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	h := deps.Host
	if h == nil {
		nl, err := host.Current()
		if err != nil {
			return nil, err
		}
		h = nl
	}
	b := &Bond{cfg: cfg, log: log, host: h, changes: host.NewChanges(h)}
	var owned []interface{ Close() error } // until the engine owns them
	defer func() {
		if err != nil {
			for _, c := range owned {
				c.Close()
			}
			b.Close()
		}
	}()

	var srcs []netip.Prefix
	for _, p := range cfg.Paths {
		if a, err := netip.ParseAddr(p.Local); err == nil {
			srcs = append(srcs, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	removed, err := host.RemoveLeftovers(h, srcs)
	for _, r := range removed {
		log.Info("removed what an earlier run left", "what", r)
	}
	if err != nil {
		return nil, fmt.Errorf("removing an earlier run's rules and routes: %w", err)
	}

	codec := cfg.Encapsulation()
	var authCfg *AuthConfig
	if cfg.Auth.KeyFile != "" {
		key, err := session.ReadKeyFile(cfg.Auth.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth.key_file: %w", err)
		}
		allowed, _ := cfg.AllowedSources() // validated
		authCfg = &AuthConfig{Key: key, Encrypt: cfg.Auth.Encrypt, AllowedSources: allowed}
		if len(allowed) == 0 {
			log.Info("auth: any inner source address is accepted from the peer (set auth.allowed_sources to narrow it)")
		}
	} else {
		log.Warn("no auth: any packet from the peer's addresses is taken as the peer's (one who can spoof them can inject into the TUN and disturb the paths); set auth.key_file, see README \"Security\"")
	}
	if cfg.Encap == "ipip" && cfg.Scheduler != "flowhash" {
		log.Warn("IPIP carries no sequence number, so the far end cannot reorder: per-packet scheduling over paths of different delay will reorder TCP; use scheduler: flowhash", "scheduler", cfg.Scheduler)
	}

	openUplink := deps.OpenUplink
	if openUplink == nil {
		openUplink = openInside(h, conn.OpenRaw)
	}
	openUDP := deps.OpenUDP
	if openUDP == nil {
		openUDP = openInside(h, conn.OpenUDP)
	}
	b.members = &members{cfg: cfg, h: h, changes: b.changes, log: log,
		slots: make([]*pathSlot, len(cfg.Paths)), routing: make([]*pathRouting, len(cfg.Paths)), links: make([]string, len(cfg.Paths))}
	b.members.open = func(i int, local netip.Addr) (conn.Uplink, error) {
		p := cfg.Paths[i]
		remote, _ := netip.ParseAddr(p.Remote) // validated; none: learned (udp with auth)
		if p.Transport == TransportUDP {
			uc := conn.UDPConfig{Local: netip.AddrPortFrom(local, uint16(p.Port)), Device: p.Device, BatchSize: cfg.BatchSize, Log: log}
			if remote.IsValid() {
				uc.Remote = netip.AddrPortFrom(remote, uint16(p.Port))
			}
			return openUDP(uc)
		}
		raw, err := openUplink(conn.RawConfig{Local: local, Remote: remote, Device: p.Device, Protocols: codec.Protocols(), BatchSize: cfg.BatchSize})
		if err != nil || p.Transport != TransportAuto {
			return raw, err
		}
		udp, err := openUDP(conn.UDPConfig{Local: netip.AddrPortFrom(local, uint16(p.Port)), Remote: netip.AddrPortFrom(remote, uint16(p.Port)),
			Device: p.Device, BatchSize: cfg.BatchSize, Log: log})
		if err != nil {
			raw.Close()
			return nil, err
		}
		return &autoUplink{name: p.Name, raw: raw, udp: udp, log: log}, nil
	}
	var paths []EnginePath
	for i, p := range cfg.Paths {
		local, _ := netip.ParseAddr(p.Local) // none: the device's, when it has one
		remote, _ := netip.ParseAddr(p.Remote)
		var rap netip.AddrPort
		if remote.IsValid() {
			rap = netip.AddrPortFrom(remote, uint16(p.Port))
		}
		nrecv := len(codec.Protocols())
		if p.Transport == TransportAuto {
			nrecv++ // and the UDP socket's
		}
		b.members.slots[i] = newPathSlot(cfg.BatchSize, nrecv, p.Transport != TransportGRE, rap)
		owned = append(owned, b.members.slots[i])
		ceiling := 0.0
		if p.Ceiling != "" {
			bits, _ := ParseRate(p.Ceiling) // validated
			ceiling = bits / 8
		}
		paths = append(paths, EnginePath{Name: p.Name, Weight: uint32(p.Weight), Local: local, Remote: remote, Uplink: b.members.slots[i], Ceiling: ceiling, Transport: p.Transport})
	}
	if err := b.members.sync(true); err != nil {
		return nil, err
	}
	if err := b.members.usable(); err != nil {
		return nil, err
	}
	l2 := cfg.Mode == ModeL2
	mtuKey, frame := "tun.mtu", 0
	b.mtu = cfg.TUN.MTU
	if l2 {
		// A frame carries its Ethernet header on top of the MTU.
		mtuKey, frame, b.mtu = "tap.mtu", header.EthernetHeaderLen, cfg.TAP.MTU
	}
	if b.mtu == 0 {
		b.mtu = 65535
		for i, s := range b.members.slots {
			if s.Waiting() == "" {
				l, err := h.Link(b.members.linkOf(i))
				if err != nil {
					return nil, fmt.Errorf("paths[%d] (%s): %w", i, cfg.Paths[i].Name, err)
				}
				b.mtu = min(b.mtu, l.MTU-cfg.pathOverhead(i)-frame)
			}
		}
		if b.mtu < 576 {
			return nil, fmt.Errorf("%s: the smallest uplink MTU leaves %d bytes after the encapsulation; set %s", mtuKey, b.mtu, mtuKey)
		}
	}
	b.members.mtu = b.mtu + frame

	var dev tun.Device
	if l2 {
		openTAP := deps.OpenTAP
		if openTAP == nil {
			openTAP = func(name string, mtu int) (dev tun.Device, err error) {
				err = h.Do(func() (err error) { dev, err = openWaterTAP(name, mtu); return })
				return dev, err
			}
		}
		if cfg.TAP.Bridge != "" {
			if _, err := h.Link(cfg.TAP.Bridge); err != nil {
				return nil, fmt.Errorf("tap.bridge %s: %w", cfg.TAP.Bridge, err)
			}
		}
		if dev, err = openTAP(cfg.TAP.Name, b.mtu); err != nil {
			return nil, fmt.Errorf("tap.name %s: creating the TAP device: %w", cfg.TAP.Name, err)
		}
		log.Info("TAP opened without offloads (water: no IFF_VNET_HDR): one frame per read and write")
	} else {
		openTUN := deps.OpenTUN
		if openTUN == nil {
			openTUN = func(name string, mtu int) (dev tun.Device, err error) {
				err = h.Do(func() (err error) { dev, err = tun.CreateTUN(name, mtu); return })
				return dev, err
			}
		}
		if dev, err = openTUN(cfg.TUN.Name, b.mtu); err != nil {
			return nil, fmt.Errorf("tun.name %s: creating the TUN device: %w", cfg.TUN.Name, err)
		}
		if dev.BatchSize() == 1 {
			log.Info("TUN offloads unavailable (no IFF_VNET_HDR): one packet per read and write")
		}
	}
	owned = append(owned, dev)
	b.engine, err = NewEngine(EngineConfig{
		Encap: codec, Scheduler: cfg.Scheduler,
		Reorder:   reorder.Config{Window: cfg.Reorder.Window, Timeout: cfg.Reorder.Timeout, LossGrace: cfg.Reorder.LossGrace},
		Keepalive: cfg.Keepalive.Interval, Misses: cfg.Keepalive.Misses, MTU: b.mtu, Paths: paths, Log: log,
		AdaptiveTimeout: cfg.Reorder.Adaptive, Repair: cfg.Reorder.Repair, Now: deps.Now, Redundancy: cfg.Redundancy,
		Auth: authCfg,
	}, dev)
	if err != nil {
		return nil, err
	}
	owned = nil // the engine's now: Close closes them

	if err := b.configureTUN(); err != nil {
		return nil, err
	}
	b.members.mu.Lock()
	b.members.engine = b.engine
	for i, s := range b.members.slots {
		if s.Waiting() == "" {
			_ = b.engine.setPathLocal(cfg.Paths[i].Name, s.local)
		}
	}
	b.members.mu.Unlock()
	if err := b.members.watch(); err != nil {
		return nil, fmt.Errorf("following the host's links and addresses: %w", err)
	}
	if cfg.Control.Socket != "" {
		if b.control, err = listenControl(cfg.Control.Socket, b.engine); err != nil {
			return nil, err
		}
	}
	if deps.Metrics != nil {
		if err := deps.Metrics.Register(b.engine.Collector()); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
		b.metrics = deps.Metrics
	}
	b.engine.Start()
	dname, _ := dev.Name()
	log.Info("bond endpoint started", "mode", cfg.Mode, "device", dname, "address", cfg.TUN.Address, "mtu", b.mtu,
		"encap", cfg.Encap, "scheduler", cfg.Scheduler, "paths", len(paths), "offloads", dev.BatchSize() > 1,
		"routing", cfg.Routing, "auth", authCfg != nil, "encrypt", cfg.Auth.Encrypt)
	return b, nil
}

// configureTUN gives the TUN its MTU and address and sets it up. The MTU
// and the up state go with the TUN, which Close deletes; the address is a
// change to undo. In mode l2 the TAP gets its MTU and, when named, its
// bridge (a change to undo: the TAP goes with Close anyway), and no address.
func (b *Bond) configureTUN() error {
	if b.cfg.Mode == ModeL2 {
		name := b.cfg.TAP.Name
		if err := b.host.SetLinkMTU(name, b.mtu); err != nil {
			return fmt.Errorf("tap.mtu %d: %w", b.mtu, err)
		}
		if br := b.cfg.TAP.Bridge; br != "" {
			if err := b.changes.SetLinkMaster(name, br); err != nil {
				return fmt.Errorf("tap.bridge %s: %w", br, err)
			}
		}
		if err := b.host.SetLinkUp(name); err != nil {
			return fmt.Errorf("tap.name %s: set up: %w", name, err)
		}
		return nil
	}
	name := b.cfg.TUN.Name
	a, err := netip.ParsePrefix(b.cfg.TUN.Address)
	if err != nil {
		return fmt.Errorf("tun.address: %w", err)
	}
	if err := b.host.SetLinkMTU(name, b.mtu); err != nil {
		return fmt.Errorf("tun.mtu %d: %w", b.mtu, err)
	}
	if err := b.changes.ReplaceAddr(name, a); err != nil {
		return fmt.Errorf("tun.address %s: %w", b.cfg.TUN.Address, err)
	}
	if err := b.host.SetLinkUp(name); err != nil {
		return fmt.Errorf("tun.name %s: set up: %w", name, err)
	}
	return nil
}

// Engine is the bond's data plane (paths' status, weights, reorder counters).
func (b *Bond) Engine() *Engine { return b.engine }

// MTU is the TUN's MTU.
func (b *Bond) MTU() int { return b.mtu }

// Done is closed when the bond stops, by Close or by itself (Err says why).
func (b *Bond) Done() <-chan struct{} { return b.engine.Done() }

// Err is why the bond stopped by itself (its TUN deleted, say), or nil.
func (b *Bond) Err() error { return b.engine.Err() }

// Close stops the bond, deletes its TUN, closes its uplinks and control
// socket, unregisters its metrics and undoes its host changes, newest first.
func (b *Bond) Close() error {
	b.closeOnce.Do(func() {
		var errs []error
		if b.control != nil {
			errs = append(errs, b.control.Close())
		}
		if b.members != nil {
			b.members.stop()
		}
		if b.metrics != nil {
			b.metrics.Unregister(b.engine.Collector())
		}
		if err := b.changes.Undo(); err != nil {
			errs = append(errs, fmt.Errorf("restoring the host: %w", err))
		}
		if b.engine != nil {
			errs = append(errs, b.engine.Close()) // closing the TUN removes it
			b.log.Info("bond endpoint stopped")
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// openInside is open run inside h's namespace: the sockets belong to the
// namespace of the thread that creates them.
func openInside[C any, U conn.Uplink](h host.Host, open func(C) (U, error)) func(C) (conn.Uplink, error) {
	return func(c C) (u conn.Uplink, err error) {
		err = h.Do(func() error {
			x, err := open(c)
			if err == nil {
				u = x
			}
			return err
		})
		return u, err
	}
}
