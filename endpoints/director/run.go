package director

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// Check is a real server health check.
type Check struct {
	Type     string // tcp | http | none
	Path     string // for http
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// RunConfig is a running director's setup.
type RunConfig struct {
	TUN          string     // the TUN the VIPs are routed to
	Local        netip.Addr // the director's address towards the real servers
	Encap        encap.Encapsulation
	MTU          int // egress MTU towards the real servers; 0: the interface's
	Connections  int // table size
	Timeouts     Timeouts
	Check        Check
	ExpireNoDest bool   // drop a failed server's connections (IPVS expire_nodest_conn)
	Rules        string // initial services, in ipvsadm's save format
}

// Running is a director at work on a host.
type Running struct {
	*Director
	cfg     RunConfig
	host    *host.Netlink
	log     *slog.Logger
	dev     tun.Device
	up      *conn.RawUplink
	routeMu sync.Mutex
	routes  map[netip.Addr]*netlink.Route // VIP → its route to the TUN
	done    chan struct{}
	wg      sync.WaitGroup
	closed  atomic.Bool

	// Counters for the data path.
	RxPackets, TxPackets, Replies, SendErrors atomic.Uint64
}

// Start sets the director up on host (TUN, raw socket, VIP routes) and runs it.
func Start(cfg RunConfig, host *host.Netlink, log *slog.Logger) (_ *Running, err error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Running{cfg: cfg, host: host, log: log, done: make(chan struct{}), routes: map[netip.Addr]*netlink.Route{}}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if cfg.MTU == 0 {
		cfg.MTU = 1500
		if addrs, err := host.Handle().AddrList(nil, netlink.FAMILY_V4); err == nil {
			for _, a := range addrs {
				if a.IP.Equal(cfg.Local.AsSlice()) {
					if l, err := host.Handle().LinkByIndex(a.LinkIndex); err == nil {
						cfg.MTU = l.Attrs().MTU
					}
				}
			}
		}
	}
	if cfg.Connections == 0 {
		cfg.Connections = 1 << 20
	}
	r.cfg = cfg
	r.Director = New(cfg.Connections, cfg.Timeouts, cfg.MTU, cfg.Encap)
	if err := host.Do(func() (err error) {
		r.up, err = conn.OpenRaw(conn.RawConfig{Local: cfg.Local, Protocols: cfg.Encap.Protocols()})
		return
	}); err != nil {
		return nil, fmt.Errorf("local %v: %w", cfg.Local, err)
	}
	if err := host.Do(func() (err error) { r.dev, err = tun.CreateTUN(cfg.TUN, 1500); return }); err != nil {
		return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
	}
	l, err := host.Handle().LinkByName(cfg.TUN)
	if err != nil {
		return nil, err
	}
	if err := host.Handle().LinkSetUp(l); err != nil {
		return nil, err
	}
	r.Director.OnVIPs = func(vips []netip.Addr) {
		if err := r.routeVIPs(vips); err != nil {
			r.log.Error("routing VIPs to the TUN", "err", err)
		}
	}
	if cfg.Rules != "" {
		if err := r.Director.Restore(cfg.Rules); err != nil {
			return nil, fmt.Errorf("services: %w", err)
		}
	}
	r.wg.Add(2)
	go r.dataLoop()
	go r.expireLoop()
	r.startChecks()
	go func() {
		for range r.dev.Events() {
		}
	}()
	return r, nil
}

// routeVIPs routes exactly the given VIPs to the TUN: new ones get a route,
// those no service uses any more lose theirs.
func (r *Running) routeVIPs(vips []netip.Addr) error {
	r.routeMu.Lock()
	defer r.routeMu.Unlock()
	if r.closed.Load() {
		return nil
	}
	l, err := r.host.Handle().LinkByName(r.cfg.TUN)
	if err != nil {
		return err
	}
	want := map[netip.Addr]bool{}
	var errs []error
	for _, a := range vips {
		want[a] = true
		if r.routes[a] != nil {
			continue
		}
		rt := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
		if err := r.host.Handle().RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %v to %s: %w", a, r.cfg.TUN, err))
			continue
		}
		r.routes[a] = rt
	}
	for a, rt := range r.routes {
		if !want[a] {
			_ = r.host.Handle().RouteDel(rt)
			delete(r.routes, a)
		}
	}
	return errors.Join(errs...)
}

func (r *Running) rulesSnapshot() []Service {
	r.Director.mu.Lock()
	defer r.Director.mu.Unlock()
	out := make([]Service, len(r.rules.Services))
	for i, s := range r.rules.Services {
		out[i] = *s
	}
	return out
}

// dataLoop reads client packets from the TUN, decides each, and sends the
// batch to the real servers in one sendmmsg.
func (r *Running) dataLoop() {
	defer r.wg.Done()
	bs := r.dev.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, encap.Headroom+65536)
	}
	out := make([][]byte, 0, bs)
	dsts := make([]netip.Addr, 0, bs)
	var replies [][]byte
	for {
		n, err := r.dev.Read(bufs, sizes, encap.Headroom)
		if err != nil {
			if r.closed.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		now := time.Now()
		out, dsts, replies = out[:0], dsts[:0], replies[:0]
		r.Director.Lock()
		for i := 0; i < n; i++ {
			r.RxPackets.Add(1)
			v := r.Director.Process(bufs[i][encap.Headroom:encap.Headroom+sizes[i]], now)
			switch {
			case v.Forward:
				if pkt := r.cfg.Encap.EncapData(bufs[i], encap.Headroom, sizes[i], 0); pkt != nil {
					out = append(out, pkt)
					dsts = append(dsts, v.Real.Addr())
				}
			case v.Reply > 0:
				b := make([]byte, 16+v.Reply)
				copy(b[16:], r.Director.ICMP()[:v.Reply])
				replies = append(replies, b)
			}
		}
		r.Director.Unlock()
		if len(out) > 0 {
			sent, err := r.up.SendTo(out, dsts)
			r.TxPackets.Add(uint64(sent))
			if err != nil {
				r.SendErrors.Add(uint64(len(out) - sent))
			}
		}
		if len(replies) > 0 {
			if _, err := r.dev.Write(replies, 16); err == nil {
				r.Replies.Add(uint64(len(replies)))
			}
		}
	}
}

func (r *Running) expireLoop() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			r.Director.Expire(now)
			r.Director.Estimate(now)
		case <-r.done:
			return
		}
	}
}

// startChecks runs one health check per real server of every service.
func (r *Running) startChecks() {
	c := r.cfg.Check
	if c.Type == "" || c.Type == "none" {
		return
	}
	for _, s := range r.rulesSnapshot() {
		for _, x := range s.Reals {
			r.wg.Add(1)
			go r.checkLoop(s.Proto, s.VIP, x.Addr)
		}
	}
}

func (r *Running) checkLoop(proto uint8, vip, rip netip.AddrPort) {
	defer r.wg.Done()
	c := r.cfg.Check
	up, streak := true, 0
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		t0 := time.Now()
		ok := r.probe(rip) == nil
		r.Director.RecordCheck(proto, vip, rip, time.Since(t0))
		if ok == up {
			streak = 0
		} else {
			streak++
			if (ok && streak >= c.Rise) || (!ok && streak >= c.Fall) {
				up, streak = ok, 0
				r.log.Info("real server health", "service", vip, "real", rip, "up", up)
				_ = r.Director.SetHealth(proto, vip, rip, up, !up && r.cfg.ExpireNoDest)
			}
		}
		select {
		case <-t.C:
		case <-r.done:
			return
		}
	}
}

// probe connects to the real server (its own address, not the VIP) and,
// for http, asks for the path and wants a 2xx or 3xx.
func (r *Running) probe(rip netip.AddrPort) error {
	c := r.cfg.Check
	var conn net.Conn
	if err := r.host.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp", rip.String(), c.Timeout)
		return
	}); err != nil {
		return err
	}
	defer conn.Close()
	if c.Type != "http" {
		return nil
	}
	_ = conn.SetDeadline(time.Now().Add(c.Timeout))
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: tunbond-check\r\n\r\n", c.Path, rip.Addr())
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(line)
	if len(f) < 2 || (f[1][0] != '2' && f[1][0] != '3') {
		return fmt.Errorf("http status %q", strings.TrimSpace(line))
	}
	return nil
}

// Close stops the director and removes its TUN and routes.
func (r *Running) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(r.done)
	r.routeMu.Lock()
	for _, rt := range r.routes {
		_ = r.host.Handle().RouteDel(rt)
	}
	r.routeMu.Unlock()
	if r.dev != nil {
		r.dev.Close()
	}
	if r.up != nil {
		r.up.Close()
	}
	r.wg.Wait()
	return nil
}
