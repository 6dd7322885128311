package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/endpoints/ctlsock"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/role"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"

	"github.com/prometheus/client_golang/prometheus"
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
	TUN string // the TUN the VIPs are routed to (ingress tun)
	// Ingress is tun (the VIPs routed to the TUN; "" is tun) or ring (a
	// PACKET_MMAP ring takes the packets to the VIPs on every interface,
	// the VIPs are routed to a blackhole, and there is no TUN).
	Ingress      string
	Local        netip.Addr // the director's address towards the real servers
	Encap        encap.Encapsulation
	MTU          int // egress MTU towards the real servers; 0: the interface's
	Connections  int // table size
	Timeouts     Timeouts
	Check        Check
	ExpireNoDest bool   // drop a failed server's connections (IPVS expire_nodest_conn)
	Rules        string // initial services, in ipvsadm's save format
	AdminSocket  string // where `tunbond adm` talks to it; "": no admin socket
	// BGP, when set, announces the VIPs with a healthy real server.
	BGP *BGPConfig
}

// Transport is what the director sends on: raw sockets bound to its local
// address, each packet to its own real server (conn.RawUplink). It never
// receives: the real servers answer the clients directly.
type Transport interface {
	SendTo(pkts [][]byte, dsts []netip.Addr) (int, error)
	Close() error
}

// Ring is the ring ingress (conn.PacketRing): the packets to the VIPs, and
// a way to send whole packets (ICMP errors) back.
type Ring interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
	SetDestinations(dsts []netip.Addr) error
	// Stats: packets larger than a frame, and dropped on a full ring.
	Stats() (truncated, dropped uint64)
	// TruncatedOn: the interface index of the last packet larger than a frame.
	TruncatedOn() int
	Close() error
}

// ingress is where the clients' packets come from: the TUN or the ring.
type ingress interface {
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	Write(bufs [][]byte, offset int) (int, error)
	BatchSize() int
}

// Deps are the director's devices, sockets and surroundings; the zero
// value is the real thing in the current namespace.
type Deps struct {
	Host       host.Host                                      // nil: host.Current()
	OpenTUN    func(name string, mtu int) (tun.Device, error) // nil: tun.CreateTUN inside Host.Do
	OpenUplink func(conn.RawConfig) (Transport, error)        // nil: conn.OpenRaw inside Host.Do
	OpenRing   func() (Ring, error)                           // nil: conn.OpenRing inside Host.Do
	Metrics    prometheus.Registerer                          // nil: no metrics
	Log        *slog.Logger                                   // nil: slog.Default()
	Now        func() time.Time                               // nil: time.Now
	// Probe checks one real server (its own address, not the VIP); nil:
	// a TCP connect (and for http a GET) inside Host.Do, per RunConfig.Check.
	Probe func(ctx context.Context, real netip.AddrPort) error
}

// Running is a director at work on a host: the Director's decisions over a
// TUN (the clients' packets, routed there by VIP) and a Transport (to the
// real servers), with the admin socket, the health checks and the metrics.
type Running struct {
	*Director
	cfg     RunConfig
	log     *slog.Logger
	now     func() time.Time
	probeFn func(ctx context.Context, real netip.AddrPort) error
	host    host.Host
	changes *host.Changes // every host change, undone by Close
	dev     tun.Device    // ingress tun
	ring    Ring          // ingress ring
	in      ingress       // dev or ring
	up      Transport
	admin   *ctlsock.Server
	bgp     *Speaker   // nil without bgp
	annMu   sync.Mutex // one announcement at a time, each from the latest health
	metrics prometheus.Registerer
	regd    []prometheus.Collector

	syncMu sync.Mutex // the VIP routes and the checks follow the rules under it
	routes map[netip.Addr]host.Route
	checks map[checkID]*checker

	truncSeen   uint64    // ring truncations already warned of (expireLoop's)
	truncWarned time.Time // when

	life      role.Stop
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	// Counters for the data path.
	RxPackets, TxPackets, Replies, SendErrors atomic.Uint64
	// SegmentErrors counts TUN reads that returned tun.ErrTooManySegments
	// (the packets read alongside are forwarded; the rest of the GSO
	// super-packet is lost).
	SegmentErrors atomic.Uint64
}

// Start sets the director up (TUN, raw sockets, VIP routes, admin socket)
// and runs it until Close, or until it fails by itself (Done, Err).
func Start(cfg RunConfig, deps Deps) (_ *Running, err error) {
	r := &Running{cfg: cfg, log: deps.Log, now: deps.Now, probeFn: deps.Probe, host: deps.Host,
		metrics: deps.Metrics,
		routes:  map[netip.Addr]host.Route{}, checks: map[checkID]*checker{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.host == nil {
		h, err := host.Current()
		if err != nil {
			return nil, err
		}
		r.host = h
	}
	h := r.host
	r.changes = host.NewChanges(h)
	if r.probeFn == nil {
		r.probeFn = r.probe
	}
	openTUN := deps.OpenTUN
	if openTUN == nil {
		openTUN = func(name string, mtu int) (dev tun.Device, err error) {
			err = h.Do(func() (err error) { dev, err = tun.CreateTUN(name, mtu); return })
			return
		}
	}
	openUplink := deps.OpenUplink
	if openUplink == nil {
		openUplink = func(c conn.RawConfig) (Transport, error) {
			var u *conn.RawUplink
			if err := h.Do(func() (err error) { u, err = conn.OpenRaw(c); return }); err != nil {
				return nil, err
			}
			return u, nil
		}
	}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	if cfg.MTU == 0 {
		cfg.MTU = 1500
		if l, _, err := h.LinkByAddr(cfg.Local); err == nil {
			cfg.MTU = l.MTU
		}
	}
	if cfg.Connections == 0 {
		cfg.Connections = 1 << 20
	}
	r.cfg = cfg
	r.Director = New(cfg.Connections, cfg.Timeouts, cfg.MTU, cfg.Encap)
	if r.up, err = openUplink(conn.RawConfig{Local: cfg.Local, Protocols: cfg.Encap.Protocols()}); err != nil {
		return nil, fmt.Errorf("local %v: %w", cfg.Local, err)
	}
	switch cfg.Ingress {
	case "", "tun":
		if r.dev, err = openTUN(cfg.TUN, 1500); err != nil {
			return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
		}
		if err := h.SetLinkUp(cfg.TUN); err != nil {
			return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
		}
		r.in = r.dev
	case "ring":
		openRing := deps.OpenRing
		if openRing == nil {
			openRing = func() (Ring, error) {
				var p *conn.PacketRing // not a nil *PacketRing in a Ring on failure
				if err := h.Do(func() (err error) { p, err = conn.OpenRing(conn.RingConfig{}); return }); err != nil {
					return nil, err
				}
				return p, nil
			}
		}
		rg, err := openRing()
		if err != nil {
			return nil, fmt.Errorf("ingress ring: %w", err)
		}
		r.ring, r.in = rg, rg
		r.removeLeftoverBlackholes()
	default:
		return nil, fmt.Errorf("ingress %q is not tun or ring", cfg.Ingress)
	}
	if cfg.BGP != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if r.bgp, err = StartSpeaker(ctx, *cfg.BGP, r.log); err != nil {
			return nil, err
		}
		r.Director.BGPStatus = r.bgpStatus
	}
	r.Director.OnVIPs = func(vips []netip.Addr) { r.follow(vips) }
	if cfg.Rules != "" {
		if err := r.Director.Restore(cfg.Rules); err != nil {
			return nil, fmt.Errorf("services: %w", err)
		}
	}
	if cfg.AdminSocket != "" {
		if r.admin, err = serveAdmin(cfg.AdminSocket, r.Director, r.now); err != nil {
			return nil, err
		}
	}
	if r.metrics != nil {
		collectors := []prometheus.Collector{Collector{r.Director}, dataPath{r}}
		if r.bgp != nil {
			collectors = append(collectors, r.bgp)
		}
		for _, c := range collectors {
			if err := r.metrics.Register(c); err != nil {
				return nil, fmt.Errorf("metrics: %w", err)
			}
			r.regd = append(r.regd, c)
		}
	}
	r.wg.Add(2)
	go r.dataLoop()
	go r.expireLoop()
	if r.dev != nil {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for range r.dev.Events() {
			}
		}()
	}
	name := cfg.TUN
	if r.ring != nil {
		name = "ring"
	}
	r.log.Info("director started", "ingress", name, "local", cfg.Local, "services", len(r.rulesSnapshot()), "admin", cfg.AdminSocket)
	return r, nil
}

// Run starts the director and runs it until ctx ends (nil) or it stops by
// itself (its error), then closes it.
func Run(ctx context.Context, cfg RunConfig, deps Deps) error {
	return role.Run(ctx, func() (*Running, error) { return Start(cfg, deps) })
}

// Done is closed when the director stops, by Close or by itself.
func (r *Running) Done() <-chan struct{} { return r.life.Done() }

// Err is why the director stopped by itself (its TUN deleted, say); nil
// while it runs and after Close.
func (r *Running) Err() error { return r.life.Err() }

// fail stops the director by itself with err, once; Close still has to
// be called to restore the host.
func (r *Running) fail(err error) {
	// Logged before Done, so whoever waits on Done finds the reason logged.
	r.life.Fail(err, func() { r.log.Error("director stopped", "err", err) })
}

// follow brings the VIP routes and the health checks in line with the
// rules after every change.
func (r *Running) follow(vips []netip.Addr) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	if r.life.Closing() {
		return
	}
	if r.ring != nil {
		// The ring takes them first: the blackhole routes below only
		// keep the kernel from forwarding its own copy.
		if !conn.FilterFits(vips) {
			r.log.Error("ingress ring: too many VIPs for its filter (about 2000 IPv4 ones fit); the ring takes none", "vips", len(vips))
		}
		if err := r.ring.SetDestinations(vips); err != nil {
			r.log.Error("ingress ring", "err", err)
		}
	}
	if err := r.routeVIPs(vips); err != nil {
		r.log.Error("routing the VIPs", "err", err)
	}
	r.syncChecks()
	r.announce()
}

// announce makes the BGP speaker announce exactly the VIPs that have a
// healthy real server (after a change of the rules or of a server's
// health).
func (r *Running) announce() {
	if r.bgp == nil || r.life.Closing() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Read and announce under one lock: two checks deciding at once must
	// not announce an older view after a newer one.
	r.annMu.Lock()
	defer r.annMu.Unlock()
	if err := r.bgp.Announce(ctx, r.Director.HealthyVIPs(r.cfg.Check.Type != "none")); err != nil {
		r.log.Error("bgp", "err", err)
	}
}

// bgpStatus is `tunbond adm --bgp`: the peers and what is announced.
func (r *Running) bgpStatus() string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var b strings.Builder
	fmt.Fprintf(&b, "BGP AS %d router id %s\nPeer                 AS          State        Up for    Prefixes\n", r.cfg.BGP.ASN, r.cfg.BGP.RouterID)
	for _, p := range r.bgp.Peers(ctx) {
		fmt.Fprintf(&b, "%-20s %-11d %-12s %-9s %d\n", p.Address, p.ASN, p.State, p.Uptime, p.Announced)
	}
	fmt.Fprintf(&b, "Announced: %v\n", r.bgp.Announced())
	return b.String()
}

// removeLeftoverBlackholes deletes the VIP blackhole routes (tunbond's,
// in the main table) that a director killed before it could undo them
// left behind: unlike TUN routes, they go with no device. The VIPs of the
// rules get theirs again at once.
func (r *Running) removeLeftoverBlackholes() {
	routes, err := r.host.Routes(0)
	if err != nil {
		r.log.Warn("ingress ring: listing routes for leftover blackholes", "err", err)
		return
	}
	for _, rt := range routes {
		if rt.Blackhole && rt.Protocol == host.Protocol && rt.Dst.IsSingleIP() {
			if err := r.host.DelRoute(rt); err != nil {
				r.log.Warn("ingress ring: a leftover blackhole route", "route", rt.String(), "err", err)
				continue
			}
			r.log.Info("ingress ring: removed a blackhole route an earlier director left", "route", rt.String())
		}
	}
}

// routeVIPs routes exactly the given VIPs to the TUN (ingress tun) or to
// a blackhole (ingress ring): new ones get a route, those no service uses
// any more lose theirs. r.syncMu is held.
func (r *Running) routeVIPs(vips []netip.Addr) error {
	want := map[netip.Addr]bool{}
	var errs []error
	for _, a := range vips {
		want[a] = true
		if _, ok := r.routes[a]; ok {
			continue
		}
		rt := host.Route{Dst: netip.PrefixFrom(a, a.BitLen()), Link: r.cfg.TUN, Scope: host.ScopeLink}
		if r.ring != nil {
			rt = host.Route{Dst: rt.Dst, Blackhole: true}
		}
		if err := r.changes.ReplaceRoute(rt); err != nil {
			errs = append(errs, fmt.Errorf("route %v: %w", rt, err))
			continue
		}
		r.routes[a] = rt
	}
	for a, rt := range r.routes {
		if !want[a] {
			if err := r.changes.DelRoute(rt); err != nil {
				errs = append(errs, err)
			}
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

// dataLoop reads client packets from the TUN or the ring, decides each,
// and sends the batch to the real servers in one sendmmsg. A read error
// other than tun.ErrTooManySegments (the TUN deleted) stops the director.
func (r *Running) dataLoop() {
	defer r.wg.Done()
	bs := r.in.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, encap.Headroom+65536)
	}
	out := make([][]byte, 0, bs)
	dsts := make([]netip.Addr, 0, bs)
	var replies [][]byte
	for {
		n, err := r.in.Read(bufs, sizes, encap.Headroom)
		if n > 0 {
			// The packets read alongside an error are good: handle them first.
			out, dsts, replies = r.forward(bufs[:n], sizes[:n], out[:0], dsts[:0], replies[:0])
		}
		if err != nil {
			if errors.Is(err, tun.ErrTooManySegments) {
				r.SegmentErrors.Add(1)
				continue
			}
			if !r.life.Closing() {
				if r.ring != nil {
					r.fail(fmt.Errorf("reading the ingress ring: %w", err))
				} else {
					r.fail(fmt.Errorf("reading tun %s: %w (was it deleted?)", r.cfg.TUN, err))
				}
			}
			return
		}
	}
}

// forward decides a batch read from the ingress and sends it.
func (r *Running) forward(bufs [][]byte, sizes []int, out [][]byte, dsts []netip.Addr, replies [][]byte) ([][]byte, []netip.Addr, [][]byte) {
	now := r.now()
	r.Director.Lock()
	for i := range bufs {
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
		if _, err := r.in.Write(replies, 16); err == nil {
			r.Replies.Add(uint64(len(replies)))
		}
	}
	return out, dsts, replies
}

func (r *Running) expireLoop() {
	defer r.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			now := r.now()
			r.Director.Expire(now)
			r.Director.Estimate(now)
			r.warnTruncated(now)
		case <-r.life.Done():
			return
		}
	}
}

// warnTruncated logs, at most once a minute, that the ring dropped packets
// larger than its frames, where they came in, and what to do.
func (r *Running) warnTruncated(now time.Time) {
	if r.ring == nil {
		return
	}
	n, _ := r.ring.Stats()
	if n == r.truncSeen || now.Sub(r.truncWarned) < time.Minute {
		return
	}
	r.truncSeen, r.truncWarned = n, now
	dev := fmt.Sprint("interface ", r.ring.TruncatedOn())
	_ = r.host.Do(func() error {
		if ifc, err := net.InterfaceByIndex(r.ring.TruncatedOn()); err == nil {
			dev = ifc.Name
		}
		return nil
	})
	r.log.Warn("ingress ring: packets larger than a ring frame were dropped; they are GRO or LRO aggregates or jumbo frames: turn GRO and LRO off on the interface (ethtool -K "+dev+" gro off lro off), or use ingress: tun",
		"dropped", n, "interface", dev)
}

// Close stops the director, closes its admin socket, TUN and sockets and
// undoes its host changes (the VIP routes). It returns what failed.
func (r *Running) Close() error {
	r.closeOnce.Do(func() {
		var errs []error
		if r.bgp != nil {
			// Withdrawn first, while the data path still forwards what
			// the router sends meanwhile.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			errs = append(errs, r.bgp.Stop(ctx, time.Second))
			cancel()
		}
		r.life.Close()
		if r.admin != nil {
			errs = append(errs, r.admin.Close())
		}
		r.syncMu.Lock()
		r.stopChecks()
		r.routes = map[netip.Addr]host.Route{}
		r.syncMu.Unlock()
		if r.changes != nil {
			errs = append(errs, r.changes.Undo())
		}
		if r.dev != nil {
			errs = append(errs, r.dev.Close())
		}
		if r.ring != nil {
			errs = append(errs, r.ring.Close())
		}
		if r.up != nil {
			errs = append(errs, r.up.Close())
		}
		r.wg.Wait()
		for _, c := range r.regd {
			r.metrics.Unregister(c)
		}
		r.closeErr = errors.Join(errs...)
	})
	return r.closeErr
}
