package bond

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"time"

	"github.com/tunbond/tunbond/endpoints/ctlsock"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/tunnel/conn"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/reorder"
)

// Endpoint is a running bond endpoint: the engine plus what it installed on
// the host (TUN, routes, rules, metrics listener, control socket), all of
// which Close removes.
type Endpoint struct {
	cfg     *Config
	host    *host.Netlink
	log     *slog.Logger
	engine  *Engine
	routing *managedRouting
	metrics *http.Server
	control *ctlsock.Server
	MTU     int // of the TUN
}

// StartEndpoint sets up the host and starts the bond. host nil means the
// current namespace (and checks that tunbond runs as root).
func StartEndpoint(cfg *Config, h *host.Netlink, log *slog.Logger) (_ *Endpoint, err error) {
	if log == nil {
		log = slog.Default()
	}
	if h == nil {
		if os.Geteuid() != 0 {
			return nil, errors.New("tunbond endpoint must run as root (it creates a TUN device, raw sockets, routes and rules)")
		}
		if h, err = host.Current(); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("/dev/net/tun is missing: load the tun module (modprobe tun) or give the container the device: %w", err)
	}
	ep := &Endpoint{cfg: cfg, host: h, log: log}
	defer func() {
		if err != nil {
			ep.Close()
		}
	}()
	links, err := findUplinks(h.Handle(), cfg.Paths)
	if err != nil {
		return nil, err
	}
	codec := cfg.Encapsulation()
	ep.MTU = cfg.TUN.MTU
	if ep.MTU == 0 {
		ep.MTU = 65535
		for _, l := range links {
			ep.MTU = min(ep.MTU, l.link.Attrs().MTU-codec.Overhead())
		}
		if ep.MTU < 576 {
			return nil, fmt.Errorf("tun.mtu: the smallest uplink MTU leaves %d bytes after %d of encapsulation; set tun.mtu", ep.MTU, codec.Overhead())
		}
	}
	if cfg.Encap == "ipip" && cfg.Scheduler != "flowhash" {
		log.Warn("IPIP carries no sequence number, so the far end cannot reorder: per-packet scheduling over paths of different delay will reorder TCP; use scheduler: flowhash", "scheduler", cfg.Scheduler)
	}

	var paths []EnginePath
	for i, p := range cfg.Paths {
		rc := conn.RawConfig{Local: netip.MustParseAddr(p.Local), Remote: netip.MustParseAddr(p.Remote),
			Device: p.Device, Protocols: codec.Protocols(), BatchSize: cfg.BatchSize}
		var u *conn.RawUplink
		if err := h.Do(func() (err error) { u, err = conn.OpenRaw(rc); return }); err != nil {
			for _, q := range paths {
				q.Uplink.Close()
			}
			return nil, fmt.Errorf("paths[%d] (%s): %w", i, p.Name, err)
		}
		paths = append(paths, EnginePath{Name: p.Name, Weight: uint32(p.Weight), Local: rc.Local, Remote: rc.Remote, Uplink: u})
	}

	var dev tun.Device
	if err := h.Do(func() (err error) { dev, err = tun.CreateTUN(cfg.TUN.Name, ep.MTU); return }); err != nil {
		for _, q := range paths {
			q.Uplink.Close()
		}
		return nil, fmt.Errorf("tun.name %s: creating the TUN device: %w", cfg.TUN.Name, err)
	}
	if dev.BatchSize() == 1 {
		log.Info("TUN offloads unavailable (no IFF_VNET_HDR): one packet per read and write")
	}
	ep.engine, err = NewEngine(EngineConfig{
		Encap: codec, Scheduler: cfg.Scheduler,
		Reorder:   reorder.Config{Window: cfg.Reorder.Window, Timeout: cfg.Reorder.Timeout, LossGrace: cfg.Reorder.LossGrace},
		Keepalive: cfg.Keepalive.Interval, Misses: cfg.Keepalive.Misses, MTU: ep.MTU, Paths: paths, Log: log,
		AdaptiveTimeout: cfg.Reorder.Adaptive,
	}, dev)
	if err != nil {
		dev.Close()
		for _, q := range paths {
			q.Uplink.Close()
		}
		return nil, err
	}
	if err := ep.configureTUN(); err != nil {
		return nil, err
	}
	if cfg.Routing == "manage" {
		if ep.routing, err = installRouting(h.Handle(), cfg, links); err != nil {
			return nil, err
		}
	}
	ep.engine.Start()
	if cfg.Metrics.Listen != "" {
		var ln net.Listener
		if err := h.Do(func() (err error) { ln, err = net.Listen("tcp", cfg.Metrics.Listen); return }); err != nil {
			return nil, fmt.Errorf("metrics.listen: %w", err)
		}
		ep.metrics = &http.Server{Handler: promhttp.HandlerFor(ep.engine.Registry(), promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go ep.metrics.Serve(ln)
	}
	if cfg.Control.Socket != "" {
		if ep.control, err = listenControl(cfg.Control.Socket, ep.engine); err != nil {
			return nil, err
		}
	}
	log.Info("bond endpoint started", "tun", cfg.TUN.Name, "address", cfg.TUN.Address, "mtu", ep.MTU,
		"encap", cfg.Encap, "scheduler", cfg.Scheduler, "paths", len(paths), "offloads", dev.BatchSize() > 1)
	return ep, nil
}

func (ep *Endpoint) configureTUN() error {
	nl := ep.host.Handle()
	l, err := nl.LinkByName(ep.cfg.TUN.Name)
	if err != nil {
		return fmt.Errorf("tun.name %s: %w", ep.cfg.TUN.Name, err)
	}
	a, err := netlink.ParseAddr(ep.cfg.TUN.Address)
	if err != nil {
		return fmt.Errorf("tun.address: %w", err)
	}
	if err := nl.LinkSetMTU(l, ep.MTU); err != nil {
		return fmt.Errorf("tun.mtu %d: %w", ep.MTU, err)
	}
	if err := nl.AddrReplace(l, a); err != nil {
		return fmt.Errorf("tun.address %s: %w", ep.cfg.TUN.Address, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("tun.name %s: set up: %w", ep.cfg.TUN.Name, err)
	}
	return nil
}

// Engine returns the data plane.
func (ep *Endpoint) Engine() *Engine { return ep.engine }

// Close stops the bond and removes the TUN, routes, rules and sockets.
func (ep *Endpoint) Close() error {
	var errs []error
	if ep.control != nil {
		errs = append(errs, ep.control.Close())
	}
	if ep.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		errs = append(errs, ep.metrics.Shutdown(ctx))
		cancel()
	}
	if ep.routing != nil {
		errs = append(errs, ep.routing.remove())
	}
	if ep.engine != nil {
		errs = append(errs, ep.engine.Close()) // closing the TUN removes it
		ep.log.Info("bond endpoint stopped")
	}
	return errors.Join(errs...)
}
