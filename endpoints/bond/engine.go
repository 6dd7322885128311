package bond

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/reorder"
)

// EnginePath is one uplink handed to the engine.
type EnginePath struct {
	Name          string
	Weight        uint32
	Local, Remote netip.Addr
	Uplink        conn.Uplink
}

// EngineConfig is what the data plane needs; the system around it (TUN
// creation, addresses, routing, sockets) is set up by Endpoint.
type EngineConfig struct {
	Encap     encap.Encapsulation
	Scheduler string
	Reorder   reorder.Config // Window and Timeout; ignored with IPIP
	Keepalive time.Duration
	Misses    int
	MTU       int // of the TUN; sizes the packet buffers
	Paths     []EnginePath
	Log       *slog.Logger
	Now       func() time.Time // the clock; nil means time.Now
	// AdaptiveTimeout raises the reorder timeout above Reorder.Timeout when
	// the paths' one-way delays (half their RTTs) differ by more: a packet on
	// the slowest path arrives that much after the ones that passed it.
	AdaptiveTimeout bool
}

// Engine is the bond's data plane: TUN → scheduler → uplinks on the way
// out; uplinks → reorder buffer → TUN on the way in; keepalives on every path.
type Engine struct {
	cfg    EngineConfig
	log    *slog.Logger
	now    func() time.Time
	dev    tun.Device
	codec  encap.Encapsulation
	paths  []*enginePath
	pset   *path.Paths
	sched  path.Scheduler
	rb     *reorder.Buffer[*packet] // nil with IPIP: no sequence, no reordering
	pool   sync.Pool                // *packet
	bufLen int                      // size of every packet buffer
	bpool  sync.Pool                // *rxBatch
	rxq    chan *rxBatch
	ctl    chan reorderCtl
	done   chan struct{}
	wg     sync.WaitGroup
	closed atomic.Bool
	once   sync.Once

	timeout  time.Duration // reorder timeout last set (health goroutine)
	warned   bool          // the scheduler advice was logged (health goroutine)
	seq      uint32        // last sequence number used (TX goroutine)
	sentUpTo atomic.Uint32 // every packet up to here has been handed to its socket

	// TUN write batch (reorder goroutine)
	wbufs [][]byte
	wout  [][]byte
	wn    int

	stateMu sync.Mutex
	stateCh chan struct{} // closed and replaced on every path state change

	Stats EngineStats
}

// EngineStats are the engine-wide counters.
type EngineStats struct {
	TUNRxPackets, TUNRxBytes atomic.Uint64 // read from the TUN
	TUNTxPackets, TUNTxBytes atomic.Uint64 // written to the TUN
	NoPath                   atomic.Uint64 // dropped: no path up
	NotIP                    atomic.Uint64 // dropped: TUN gave a non-IP packet
	TUNReadErrors            atomic.Uint64
	TUNWriteErrors           atomic.Uint64
}

type enginePath struct {
	EnginePath
	idx           int
	local, remote [4]byte

	mu       sync.Mutex // health, probeSeq
	health   pathHealth
	probeSeq uint32

	txPackets, txBytes, txErrors atomic.Uint64
	rxPackets, rxBytes           atomic.Uint64
	peerTx                       atomic.Uint64 // packets the peer says it sent on this path
	rttNs                        atomic.Int64  // smoothed
	upNow                        atomic.Bool
	lastRxNs                     atomic.Int64 // last valid packet from the peer on this path
	rxActive                     bool         // in fast loss detection (health goroutine)
	changes                      atomic.Uint64
	decode                       [header.NumDecodeErrors]atomic.Uint64
}

type packet struct {
	buf  []byte
	off  int
	n    int
	seq  uint32
	path int
}

// rxItem is a data packet, or (pkt == nil) a watermark from a keepalive.
type rxItem struct {
	pkt  *packet
	seq  uint32
	path int
}

type rxBatch struct{ items []rxItem }

// reorderCtl is a change for the reorder goroutine: a path leaving fast
// loss detection, or (path < 0) a new timeout.
type reorderCtl struct {
	path    int
	active  bool
	timeout time.Duration
}

// tunWriteOffset leaves room for the virtio-net header wireguard's tun writes.
const tunWriteOffset = 16

// NewEngine builds the engine over dev and the paths' uplinks; it owns them
// from now on and closes them in Close.
func NewEngine(cfg EngineConfig, dev tun.Device) (*Engine, error) {
	if len(cfg.Paths) == 0 {
		return nil, errors.New("engine: no paths")
	}
	e := &Engine{
		cfg: cfg, log: cfg.Log, now: cfg.Now, dev: dev, codec: cfg.Encap,
		rxq: make(chan *rxBatch, 256), ctl: make(chan reorderCtl, 64),
		done: make(chan struct{}), stateCh: make(chan struct{}),
		seq: rand.Uint32(),
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if e.now == nil {
		e.now = time.Now
	}
	e.sentUpTo.Store(e.seq)
	weights := make([]uint32, len(cfg.Paths))
	for i, p := range cfg.Paths {
		weights[i] = p.Weight
		e.paths = append(e.paths, &enginePath{EnginePath: p, idx: i, local: p.Local.As4(), remote: p.Remote.As4(),
			health: pathHealth{interval: cfg.Keepalive, misses: cfg.Misses}})
	}
	e.pset = path.NewPaths(weights)
	for i := range e.paths {
		e.pset.SetUp(i, false) // up on the first keepalive reply
	}
	var err error
	if e.sched, err = path.New(cfg.Scheduler, e.pset); err != nil {
		return nil, err
	}
	if cfg.Encap.Sequenced() {
		rc := cfg.Reorder
		rc.Paths = len(cfg.Paths)
		if e.rb, err = reorder.New(rc, e.emit); err != nil {
			return nil, fmt.Errorf("reorder: %w", err)
		}
		for i := range e.paths {
			e.rb.SetActive(i, false, e.now())
		}
	}
	bufSize := encap.Headroom + max(cfg.MTU+cfg.Encap.Overhead(), 1500) + 64
	e.bufLen = bufSize
	e.pool.New = func() any { return &packet{buf: make([]byte, bufSize)} }
	e.bpool.New = func() any { return &rxBatch{items: make([]rxItem, 0, 128)} }
	// With offloads on, wireguard's tun coalesces TCP segments (GRO) into
	// the first buffer of a flow, so write buffers are 64 KiB.
	wsize := tunWriteOffset + bufSize
	if dev.BatchSize() > 1 {
		wsize = tunWriteOffset + 65535
	}
	bs := max(dev.BatchSize(), 64)
	e.wbufs = make([][]byte, bs)
	e.wout = make([][]byte, bs)
	for i := range e.wbufs {
		e.wbufs[i] = make([]byte, wsize)
	}
	return e, nil
}

// Start runs the engine's goroutines.
func (e *Engine) Start() {
	e.wg.Add(3)
	go e.txLoop()
	go e.reorderLoop()
	go e.healthLoop()
	for _, p := range e.paths {
		for _, recv := range p.Uplink.Receivers() {
			e.wg.Add(1)
			go e.rxLoop(p, recv)
		}
	}
	go func() { // wireguard's tun reports MTU and up/down changes here
		for ev := range e.dev.Events() {
			if ev&tun.EventMTUUpdate != 0 {
				if mtu, err := e.dev.MTU(); err == nil {
					e.log.Info("TUN MTU changed", "mtu", mtu)
				}
			}
		}
	}()
}

// Close stops the engine and closes the TUN and the uplinks.
func (e *Engine) Close() error {
	var errs []error
	e.once.Do(func() {
		e.closed.Store(true)
		close(e.done)
		errs = append(errs, e.dev.Close())
		for _, p := range e.paths {
			errs = append(errs, p.Uplink.Close())
		}
		e.wg.Wait()
	})
	return errors.Join(errs...)
}

// txLoop reads batches from the TUN, picks a path per packet, prepends the
// tunnel header in the buffer's headroom and sends one batch per path.
func (e *Engine) txLoop() {
	defer e.wg.Done()
	bs := e.dev.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, e.bufLen)
	}
	out := make([][][]byte, len(e.paths))
	for i := range out {
		out[i] = make([][]byte, 0, bs)
	}
	for {
		n, err := e.dev.Read(bufs, sizes, encap.Headroom)
		if err != nil {
			if e.closed.Load() {
				return
			}
			e.Stats.TUNReadErrors.Add(1)
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if !errors.Is(err, tun.ErrTooManySegments) {
				e.log.Warn("TUN read failed", "err", err)
			}
			continue
		}
		for i := 0; i < n; i++ {
			e.Stats.TUNRxPackets.Add(1)
			e.Stats.TUNRxBytes.Add(uint64(sizes[i]))
			p := e.sched.Pick(bufs[i][encap.Headroom : encap.Headroom+sizes[i]])
			if p < 0 {
				e.Stats.NoPath.Add(1)
				continue
			}
			pkt := e.codec.EncapData(bufs[i], encap.Headroom, sizes[i], e.seq+1)
			if pkt == nil {
				e.Stats.NotIP.Add(1)
				continue
			}
			e.seq++
			out[p] = append(out[p], pkt)
		}
		for i, batch := range out {
			if len(batch) == 0 {
				continue
			}
			e.sendData(e.paths[i], batch)
			out[i] = batch[:0]
		}
		e.sentUpTo.Store(e.seq)
	}
}

func (e *Engine) sendData(p *enginePath, batch [][]byte) {
	sent, err := p.Uplink.Send(batch)
	var bytes uint64
	for _, b := range batch[:sent] {
		bytes += uint64(len(b))
	}
	p.txPackets.Add(uint64(sent))
	p.txBytes.Add(bytes)
	if err != nil {
		p.txErrors.Add(uint64(len(batch) - sent))
	}
}

// rxLoop reads one socket of one path: control messages are answered here,
// data packets go to the reorder goroutine in batches.
func (e *Engine) rxLoop(p *enginePath, recv conn.ReceiveFunc) {
	defer e.wg.Done()
	bs := p.Uplink.BatchSize()
	pk := make([]*packet, bs)
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range pk {
		pk[i] = e.pool.Get().(*packet)
		bufs[i] = pk[i].buf
	}
	defer func() {
		for _, x := range pk {
			e.pool.Put(x)
		}
	}()
	scratch := make([]byte, encap.Headroom+header.ControlPacketLen)
	ctls := make([]header.ControlFields, 0, bs)
	for {
		n, err := recv(bufs, sizes)
		if err != nil {
			if e.closed.Load() {
				return
			}
			e.log.Warn("uplink receive failed", "path", p.Name, "err", err)
			select {
			case <-e.done:
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		now := e.now()
		batch := e.bpool.Get().(*rxBatch)
		heard := false
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				p.decode[header.ErrTruncated].Add(1)
				continue
			}
			d, err := e.codec.Decap(bufs[i][:sizes[i]], p.remote)
			if err != nil {
				var de header.DecodeError
				if errors.As(err, &de) && de < header.NumDecodeErrors {
					p.decode[de].Add(1)
				}
				continue
			}
			heard = true
			if d.Kind == encap.KindControl {
				c := header.Control(bufs[i][d.Off : d.Off+d.Len]).Fields()
				if c.HasWatermark && e.rb != nil {
					batch.items = append(batch.items, rxItem{seq: c.Watermark, path: p.idx})
				}
				ctls = append(ctls, c)
				continue
			}
			p.rxPackets.Add(1)
			p.rxBytes.Add(uint64(d.Len))
			x := pk[i]
			x.off, x.n, x.seq, x.path = d.Off, d.Len, d.Seq, p.idx
			batch.items = append(batch.items, rxItem{pkt: x, seq: d.Seq, path: p.idx})
			pk[i] = e.pool.Get().(*packet)
			bufs[i] = pk[i].buf
		}
		if heard {
			p.lastRxNs.Store(now.UnixNano())
		}
		if len(batch.items) == 0 {
			e.bpool.Put(batch)
		} else {
			select {
			case e.rxq <- batch:
			case <-e.done:
				return
			}
		}
		// Replies leave after the watermarks above are queued: the peer
		// may start sending data on this path as soon as it has a reply,
		// and the reorder buffer must count the path by then.
		for _, c := range ctls {
			e.onControl(p, c, now, scratch)
		}
		ctls = ctls[:0]
	}
}

// onControl answers a probe, or takes the RTT from a reply.
func (e *Engine) onControl(p *enginePath, c header.ControlFields, now time.Time, scratch []byte) {
	p.peerTx.Store(c.TxPackets)
	switch c.Type {
	case header.ControlProbe:
		reply := e.controlFields(p, header.ControlReply)
		reply.ProbeSeq, reply.Timestamp = c.ProbeSeq, c.Timestamp
		e.sendControl(p, scratch, reply)
	case header.ControlReply:
		rtt := now.Sub(time.Unix(0, c.Timestamp))
		if rtt < 0 || rtt > time.Minute {
			return // not one of our timestamps
		}
		p.mu.Lock()
		cameUp := p.health.onReply(now, rtt)
		p.rttNs.Store(int64(p.health.srtt))
		e.pset.SetDelay(p.idx, p.health.minRTT/2)
		e.pset.SetQueueUntil(p.idx, now.Add(rtt-p.health.minRTT))
		if cameUp {
			e.setState(p, true, now)
		}
		p.mu.Unlock()
	}
}

func (e *Engine) controlFields(p *enginePath, typ uint8) header.ControlFields {
	return header.ControlFields{Type: typ, Watermark: e.sentUpTo.Load(), HasWatermark: e.rb != nil,
		TxPackets: p.txPackets.Load()}
}

func (e *Engine) sendControl(p *enginePath, scratch []byte, f header.ControlFields) {
	pkt := e.codec.EncapControl(scratch, p.local, p.remote, f)
	one := [1][]byte{pkt}
	if _, err := p.Uplink.Send(one[:]); err != nil {
		p.txErrors.Add(1)
	}
}

// setState records a path going up or down; p.mu is held.
func (e *Engine) setState(p *enginePath, up bool, now time.Time) {
	e.pset.SetUp(p.idx, up) // the scheduler first: once upNow says down, nothing new goes there
	p.upNow.Store(up)
	p.changes.Add(1)
	if up {
		e.log.Info("path up", "path", p.Name, "rtt", time.Duration(p.rttNs.Load()).Round(10*time.Microsecond))
	} else {
		e.log.Warn("path down", "path", p.Name, "silent_for", now.Sub(p.health.lastReply).Round(time.Millisecond))
	}
	e.stateMu.Lock()
	close(e.stateCh)
	e.stateCh = make(chan struct{})
	e.stateMu.Unlock()
}

// healthLoop probes every path each interval and takes silent paths down.
func (e *Engine) healthLoop() {
	defer e.wg.Done()
	scratch := make([]byte, encap.Headroom+header.ControlPacketLen)
	t := time.NewTicker(e.cfg.Keepalive)
	defer t.Stop()
	for {
		now := e.now()
		for _, p := range e.paths {
			p.mu.Lock()
			p.probeSeq++
			f := e.controlFields(p, header.ControlProbe)
			f.ProbeSeq, f.Timestamp = p.probeSeq, now.UnixNano()
			if p.health.check(now) {
				e.setState(p, false, now)
			}
			p.mu.Unlock()
			e.checkSilence(p, now)
			e.sendControl(p, scratch, f)
		}
		e.followDelaySkew()
		select {
		case <-t.C:
		case <-e.done:
			return
		}
	}
}

// delaySkewAdvice returns a warning when rr or wrr spreads flows over paths
// whose base one-way delays differ by more than 10 ms, or "".
func delaySkewAdvice(scheduler string, delays []time.Duration) string {
	if (scheduler != "rr" && scheduler != "wrr") || len(delays) < 2 {
		return ""
	}
	lo, hi := delays[0], delays[0]
	for _, d := range delays {
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo <= 10*time.Millisecond {
		return ""
	}
	return fmt.Sprintf("the paths' one-way delays differ by %v: %s spreads every flow over all of them, so TCP sees an RTT "+
		"that jumps between the paths and grows slowly (the lab measured 20 Mbit/s over fibre + LTE where scheduler: delay "+
		"reached 296); use scheduler: delay, with weights set to the uplinks' rates in Mbit/s", (hi - lo).Round(time.Millisecond), scheduler)
}

// followDelaySkew gives the scheduler advice above once, and sets the
// reorder timeout to cover the delay difference between the up paths:
// skew × 1.5 + 10 ms, never below the configured one. The timeout moves
// only when the target differs by more than an eighth.
func (e *Engine) followDelaySkew() {
	if e.rb == nil {
		return
	}
	lo, hi, n := time.Duration(0), time.Duration(0), 0
	for _, p := range e.paths {
		if !p.upNow.Load() {
			continue
		}
		owd := time.Duration(p.rttNs.Load()) / 2
		if n == 0 || owd < lo {
			lo = owd
		}
		hi = max(hi, owd)
		n++
	}
	if !e.warned {
		var base []time.Duration
		for i, p := range e.paths {
			if p.upNow.Load() {
				base = append(base, e.pset.Delay(i))
			}
		}
		if msg := delaySkewAdvice(e.cfg.Scheduler, base); msg != "" {
			e.warned = true
			e.log.Warn(msg, "scheduler", e.cfg.Scheduler)
		}
	}
	want := e.cfg.Reorder.Timeout
	if n > 1 {
		want = max(want, (hi-lo)*3/2+10*time.Millisecond)
	}
	want = min(want, 10*time.Second)
	if !e.cfg.AdaptiveTimeout {
		return
	}
	cur := e.timeout
	if cur == 0 {
		cur = e.cfg.Reorder.Timeout
	}
	if d := want - cur; d.Abs() <= cur/8 {
		return
	}
	e.timeout = want
	e.log.Info("reorder timeout follows the paths' delay difference", "timeout", want.Round(time.Millisecond), "skew", (hi - lo).Round(time.Millisecond))
	select {
	case e.ctl <- reorderCtl{path: -1, timeout: want}:
	case <-e.done:
	}
}

// checkSilence takes a path out of fast loss detection when nothing has
// come from the peer on it for interval × misses (what it hears, not whether
// its own probes are answered: the peer may still be sending on it). The
// reorder buffer puts it back by itself when anything arrives on it.
func (e *Engine) checkSilence(p *enginePath, now time.Time) {
	if e.rb == nil {
		return
	}
	silent := now.UnixNano()-p.lastRxNs.Load() > int64(e.cfg.Keepalive)*int64(e.cfg.Misses)
	if silent == !p.rxActive {
		return
	}
	p.rxActive = !silent
	if silent {
		select {
		case e.ctl <- reorderCtl{path: p.idx}:
		case <-e.done:
		}
	}
}

// reorderLoop owns the reorder buffer and writes released packets to the TUN.
func (e *Engine) reorderLoop() {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case b := <-e.rxq:
			now := e.now()
			for _, it := range b.items {
				switch {
				case it.pkt == nil:
					e.rb.Watermark(it.path, it.seq, now)
				case e.rb == nil:
					e.emit(it.pkt)
				case !e.rb.Push(it.seq, it.path, it.pkt, now):
					e.pool.Put(it.pkt)
				}
			}
			b.items = b.items[:0]
			e.bpool.Put(b)
		case <-timer.C:
			e.rb.Expire(e.now())
		case m := <-e.ctl:
			if m.path < 0 {
				e.rb.SetTimeout(m.timeout, e.now())
			} else {
				e.rb.SetActive(m.path, m.active, e.now())
			}
		case <-e.done:
			return
		}
		e.flushTUN()
		if e.rb != nil {
			if dl, ok := e.rb.Deadline(); ok {
				timer.Reset(max(dl.Sub(e.now()), 0))
			} else {
				timer.Stop()
			}
		}
	}
}

// emit copies a released packet into the TUN write batch.
func (e *Engine) emit(x *packet) {
	if e.wn == len(e.wbufs) {
		e.flushTUN()
	}
	n := copy(e.wbufs[e.wn][tunWriteOffset:], x.buf[x.off:x.off+x.n])
	e.wout[e.wn] = e.wbufs[e.wn][:tunWriteOffset+n]
	e.wn++
	e.pool.Put(x)
}

func (e *Engine) flushTUN() {
	if e.wn == 0 {
		return
	}
	var bytes uint64
	for _, b := range e.wout[:e.wn] {
		bytes += uint64(len(b) - tunWriteOffset)
	}
	if _, err := e.dev.Write(e.wout[:e.wn], tunWriteOffset); err != nil && !e.closed.Load() {
		e.Stats.TUNWriteErrors.Add(1)
		e.log.Debug("TUN write failed", "err", err)
	} else {
		e.Stats.TUNTxPackets.Add(uint64(e.wn))
		e.Stats.TUNTxBytes.Add(bytes)
	}
	e.wn = 0
}

// PathUp reports whether the named path is up.
func (e *Engine) PathUp(name string) (bool, error) {
	p, err := e.path(name)
	if err != nil {
		return false, err
	}
	return p.upNow.Load(), nil
}

func (e *Engine) path(name string) (*enginePath, error) {
	for _, p := range e.paths {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no path named %q", name)
}

// WaitPath blocks until the named path is up (or down), or ctx ends.
func (e *Engine) WaitPath(ctx context.Context, name string, up bool) error {
	p, err := e.path(name)
	if err != nil {
		return err
	}
	for {
		e.stateMu.Lock()
		ch := e.stateCh
		e.stateMu.Unlock()
		if p.upNow.Load() == up {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("path %s still %s: %w", name, map[bool]string{true: "down", false: "up"}[up], ctx.Err())
		}
	}
}

// SetWeight changes a path's weight at run time.
func (e *Engine) SetWeight(name string, w uint32) error {
	p, err := e.path(name)
	if err != nil {
		return err
	}
	e.pset.SetWeight(p.idx, w)
	e.log.Info("path weight changed", "path", name, "weight", w)
	return nil
}

// PathStatus is a snapshot of one path, for the control socket and tests.
type PathStatus struct {
	Name      string  `json:"name"`
	Up        bool    `json:"up"`
	Weight    uint32  `json:"weight"`
	RTTMs     float64 `json:"rtt_ms"`
	TxPackets uint64  `json:"tx_packets"`
	TxBytes   uint64  `json:"tx_bytes"`
	RxPackets uint64  `json:"rx_packets"`
	RxBytes   uint64  `json:"rx_bytes"`
	TxErrors  uint64  `json:"tx_errors"`
	PeerTx    uint64  `json:"peer_tx_packets"`
	Changes   uint64  `json:"state_changes"`
	Dropped   uint64  `json:"rx_dropped"`
}

// Status returns a snapshot of every path.
func (e *Engine) Status() []PathStatus {
	out := make([]PathStatus, len(e.paths))
	for i, p := range e.paths {
		var dropped uint64
		for j := range p.decode {
			dropped += p.decode[j].Load()
		}
		out[i] = PathStatus{Name: p.Name, Up: p.upNow.Load(), Weight: e.pset.Weight(i),
			RTTMs:     float64(p.rttNs.Load()) / 1e6,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(), TxErrors: p.txErrors.Load(),
			PeerTx: p.peerTx.Load(), Changes: p.changes.Load(), Dropped: dropped}
	}
	return out
}

// ReorderStats returns the reorder buffer's counters, or nil with IPIP.
func (e *Engine) ReorderStats() *reorder.Stats {
	if e.rb == nil {
		return nil
	}
	return &e.rb.Stats
}
