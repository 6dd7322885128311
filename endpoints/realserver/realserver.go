// Package realserver is the real-server agent of director mode: it takes
// the clients' packets out of the directors' tunnels in user space and
// hands them to the local services on a TUN that holds the VIPs; replies
// leave by the normal route, from the VIP, straight to the client.
package realserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/role"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"
)

// Config is the agent's setup.
type Config struct {
	TUN       string       // the TUN that holds the VIPs
	Local     netip.Addr   // the address the directors send to
	Directors []netip.Addr // the only sources accepted
	VIPs      []netip.Addr // put on the TUN (/32)
	Encap     encap.Encapsulation
}

// Transport is what the agent receives the directors' packets on: raw
// sockets bound to its local address (conn.RawUplink, conntest's fake).
// It never sends: replies leave by the host's own routes.
type Transport interface {
	Receivers() []conn.ReceiveFunc
	BatchSize() int
	Close() error
}

// Deps are the agent's devices, sockets and surroundings; the zero value
// is the real thing in the current namespace.
type Deps struct {
	Host       host.Host                                      // nil: host.Current()
	OpenTUN    func(name string, mtu int) (tun.Device, error) // nil: tun.CreateTUN inside Host.Do
	OpenUplink func(conn.RawConfig) (Transport, error)        // nil: conn.OpenRaw inside Host.Do
	Metrics    prometheus.Registerer                          // nil: no metrics
	Log        *slog.Logger                                   // nil: slog.Default()
	Now        func() time.Time                               // nil: time.Now
}

// Agent is a running real-server agent.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	host      host.Host
	onTUN     *host.Changes // the TUN's own (its VIPs, its rp_filter): gone with it if it is deleted; nothing else of the host changes
	dev       tun.Device
	up        Transport
	directors map[netip.Addr]bool
	metrics   prometheus.Registerer
	wmu       sync.Mutex

	life      role.Stop
	closeOnce sync.Once
	closeErr  error
	wg        sync.WaitGroup

	Received atomic.Uint64                         // packets handed to the TUN
	Dropped  [header.NumDecodeErrors]atomic.Uint64 // by reason
	NotVIP   atomic.Uint64                         // dropped: the inner destination is none of the VIPs
	vips     map[netip.Addr]bool
}

// Start sets the host up (TUN with the VIPs, rp_filter) and runs the agent
// until Close, or until it fails by itself (Done, Err).
func Start(cfg Config, deps Deps) (_ *Agent, err error) {
	if len(cfg.Directors) == 0 {
		return nil, errors.New("realserver: no director addresses: packets are accepted only from them")
	}
	a := &Agent{cfg: cfg, log: deps.Log, host: deps.Host, metrics: deps.Metrics,
		directors: map[netip.Addr]bool{}, vips: map[netip.Addr]bool{}}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.host == nil {
		h, err := host.Current()
		if err != nil {
			return nil, err
		}
		a.host = h
	}
	h := a.host
	a.onTUN = host.NewChanges(h)
	for _, v := range cfg.VIPs {
		a.vips[v] = true
	}
	for _, d := range cfg.Directors {
		a.directors[d] = true
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
			a.Close()
		}
	}()
	if a.up, err = openUplink(conn.RawConfig{Local: cfg.Local, Protocols: cfg.Encap.Protocols()}); err != nil {
		return nil, fmt.Errorf("local %v: %w", cfg.Local, err)
	}
	if a.dev, err = openTUN(cfg.TUN, 1500); err != nil {
		return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
	}
	for _, v := range cfg.VIPs {
		if err := a.onTUN.ReplaceAddr(cfg.TUN, netip.PrefixFrom(v, v.BitLen())); err != nil {
			return nil, fmt.Errorf("VIP %v on %s: %w", v, cfg.TUN, err)
		}
	}
	if err := h.SetLinkUp(cfg.TUN); err != nil {
		return nil, fmt.Errorf("tun %s: %w", cfg.TUN, err)
	}
	if err := a.loosenRPFilter(); err != nil {
		return nil, err
	}
	if a.metrics != nil {
		if err := a.metrics.Register(a); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	for _, recv := range a.up.Receivers() {
		a.wg.Add(1)
		go a.rxLoop(recv)
	}
	a.wg.Add(2)
	go a.tunLoop()
	go func() {
		defer a.wg.Done()
		for range a.dev.Events() {
		}
	}()
	a.log.Info("real server agent started", "tun", cfg.TUN, "vips", cfg.VIPs, "directors", cfg.Directors)
	return a, nil
}

// rpFilterKey is the sysctl of dev's reverse-path filter.
func rpFilterKey(dev string) string {
	if strings.Contains(dev, ".") { // sysctl's slashed form keeps the dot of a VLAN name
		return "net/ipv4/conf/" + dev + "/rp_filter"
	}
	return "net.ipv4.conf." + dev + ".rp_filter"
}

// loosenRPFilter lets the clients' packets in on the TUN: their replies
// leave by the default route, so strict reverse-path filtering (1) would
// drop them. The filter in force on an interface is max(all, its own), so
// the TUN's own is set to 2 (loose: the source must be routable by some
// interface): loose on the TUN whatever `all` says, and no other interface
// touched. It goes with the TUN; Close restores it if the TUN remains.
func (a *Agent) loosenRPFilter() error {
	if err := a.onTUN.SetSysctl(rpFilterKey(a.cfg.TUN), "2"); err != nil {
		return fmt.Errorf("rp_filter on %s: %w", a.cfg.TUN, err)
	}
	return nil
}

// Run starts the agent and runs it until ctx ends (nil) or it stops by
// itself (its error), then closes it.
func Run(ctx context.Context, cfg Config, deps Deps) error {
	return role.Run(ctx, func() (*Agent, error) { return Start(cfg, deps) })
}

// Done is closed when the agent stops, by Close or by itself.
func (a *Agent) Done() <-chan struct{} { return a.life.Done() }

// Err is why the agent stopped by itself (its TUN deleted, say); nil while
// it runs and after Close.
func (a *Agent) Err() error { return a.life.Err() }

func (a *Agent) fail(err error) {
	// Logged before Done, so whoever waits on Done finds the reason logged.
	a.life.Fail(err, func() { a.log.Error("real server agent stopped", "err", err) })
}

// tunLoop reads what the host routes into the TUN (nothing the agent
// needs: replies leave by the host's routes) and drops it; its read failing
// is how a deleted TUN is noticed, traffic or not.
func (a *Agent) tunLoop() {
	defer a.wg.Done()
	bs := a.dev.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 16+65536)
	}
	for {
		_, err := a.dev.Read(bufs, sizes, 16)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			if !a.life.Closing() {
				a.fail(fmt.Errorf("reading tun %s: %w (was it deleted?)", a.cfg.TUN, err))
			}
			return
		}
	}
}

// rxLoop decapsulates what the directors send and writes it to the TUN.
func (a *Agent) rxLoop(recv conn.ReceiveFunc) {
	defer a.wg.Done()
	bs := a.up.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, 65536)
	}
	out := make([][]byte, 0, bs)
	for {
		n, err := recv(bufs, sizes, nil)
		if err != nil {
			if a.life.Closing() {
				return
			}
			// As the bond does: say so and back off, never spin on a
			// socket that keeps failing.
			a.log.Warn("receive failed", "local", a.cfg.Local, "err", err)
			select {
			case <-a.life.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		out = out[:0]
		for i := 0; i < n; i++ {
			if p := a.decap(bufs[i], sizes[i]); p != nil {
				out = append(out, p)
			}
		}
		if len(out) > 0 {
			a.wmu.Lock()
			_, err := a.dev.Write(out, 16)
			a.wmu.Unlock()
			if err == nil {
				a.Received.Add(uint64(len(out)))
			} else if errors.Is(err, os.ErrClosed) && !a.life.Closing() {
				a.fail(fmt.Errorf("writing tun %s: %w (was it deleted?)", a.cfg.TUN, err))
				return
			}
		}
	}
}

// decap checks one received packet and returns its inner packet with the
// 16 bytes in front that the TUN write wants, or nil (counted) to drop it.
func (a *Agent) decap(buf []byte, size int) []byte {
	if size == 0 {
		a.Dropped[header.ErrTruncated].Add(1)
		return nil
	}
	pkt := buf[:size]
	ip := header.IPv4(pkt)
	if ip.Validate() != nil {
		a.Dropped[header.ErrTooShort].Add(1)
		return nil
	}
	src := ip.Src()
	if !a.directors[src] {
		a.Dropped[header.ErrWrongSource].Add(1)
		return nil
	}
	d, err := a.cfg.Encap.Decap(pkt, src.As4())
	if err != nil {
		if de, ok := err.(header.DecodeError); ok && de < header.NumDecodeErrors { // unwrapped, as Decap returns it: no allocation per dropped packet
			a.Dropped[de].Add(1)
		}
		return nil
	}
	if d.Kind != encap.KindData {
		return nil // a tunbond control message: not for the services
	}
	if _, dst, _ := header.Addrs(buf[d.Off : d.Off+d.Len]); !a.vips[dst] {
		a.NotVIP.Add(1) // a director may send only its VIPs' traffic here
		return nil
	}
	// In place: the inner packet starts at least 20 bytes in (the outer
	// header), room for the 16 the TUN write wants in front, and the rest
	// of the 64 KiB buffer lets GRO coalesce into it.
	return buf[d.Off-16 : d.Off+d.Len]
}

// Close stops the agent, removes its VIPs, restores rp_filter and closes
// the TUN and the sockets. It returns what failed.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.life.Close()
		var errs []error
		// The TUN's own settings go with it when it was deleted under us.
		if _, err := a.host.Link(a.cfg.TUN); err == nil || !errors.Is(err, host.ErrNotFound) {
			errs = append(errs, a.onTUN.Undo())
		}
		if a.up != nil {
			errs = append(errs, a.up.Close())
		}
		if a.dev != nil {
			errs = append(errs, a.dev.Close())
		}
		a.wg.Wait()
		if a.metrics != nil {
			a.metrics.Unregister(a)
		}
		a.closeErr = errors.Join(errs...)
	})
	return a.closeErr
}

var (
	dReceived = prometheus.NewDesc("tunbond_realserver_received_packets_total", "Packets taken out of the directors' tunnels and handed to the TUN.", nil, nil)
	dDropped  = prometheus.NewDesc("tunbond_realserver_dropped_total", "Received packets dropped, by reason (wrong_source: not from a configured director; not_vip: to an address that is none of the VIPs).", []string{"reason"}, nil)
)

// Describe and Collect export the agent's counters.
func (a *Agent) Describe(ch chan<- *prometheus.Desc) { ch <- dReceived; ch <- dDropped }

func (a *Agent) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(dReceived, prometheus.CounterValue, float64(a.Received.Load()))
	for r := header.DecodeError(1); r < header.NumDecodeErrors; r++ {
		ch <- prometheus.MustNewConstMetric(dDropped, prometheus.CounterValue, float64(a.Dropped[r].Load()), r.Reason())
	}
	ch <- prometheus.MustNewConstMetric(dDropped, prometheus.CounterValue, float64(a.NotVIP.Load()), "not_vip")
}
