package bond

import (
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/endpoints/role"
	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"

	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/reorder"
)

// EnginePath is one uplink handed to the engine.
type EnginePath struct {
	Name          string
	Weight        uint32
	Local, Remote netip.Addr
	Uplink        conn.Uplink
	// Ceiling caps what the adaptive scheduler sends on the path, in inner
	// bytes/s (a metered or capped link); 0: none.
	Ceiling float64
	// Transport is the path's configured transport (gre, udp, auto), for
	// its status.
	Transport string
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
	// Repair asks the peer again for packets every path moved past without
	// delivering, and holds their holes for the repair's round trip.
	Repair bool
	// AdaptiveTimeout raises the reorder timeout above Reorder.Timeout when
	// the paths' one-way delays (half their RTTs) differ by more: a packet on
	// the slowest path arrives that much after the ones that passed it.
	AdaptiveTimeout bool
	// Redundancy is the class of packets sent on two paths at once.
	Redundancy RedundancyConfig
	// Epoch is this start's session epoch, sent in every keepalive so the
	// peer tells a restart from a jump; 0 (the default) draws a random one.
	// With Auth it is the handshake's.
	Epoch uint64
	// Auth seals every packet under a session a handshake agreed; nil:
	// plain GRE, anyone who can send from the peer's addresses gets in.
	Auth *AuthConfig

	firstSeq uint32 // tests: the sequence before the first packet's; 0 draws a random one
}

// Engine is the bond's data plane: TUN → scheduler → uplinks on the way
// out; uplinks → reorder buffer → TUN on the way in; keepalives on every path.
type Engine struct {
	cfg        EngineConfig
	log        *slog.Logger
	now        func() time.Time
	dev        tun.Device
	codec      encap.Encapsulation
	gre        encap.GRE // the codec, when GRE: UDP paths and sealed packets use it
	auth       *auth     // nil without auth
	paths      []*enginePath
	pathSet    *path.Paths // the paths' weights, delays and states, shared with the scheduler
	sched      path.Scheduler
	reorderBuf *reorder.Buffer[*packet] // nil with IPIP: no sequence, no reordering
	packetPool sync.Pool                // *packet
	bufLen     int                      // size of every packet buffer
	batchPool  sync.Pool                // *rxBatch
	delivery   chan *rxBatch            // receive loops → reorder goroutine
	// reorderChanges carries the health goroutine's changes to the reorder goroutine.
	reorderChanges chan reorderChange

	life      role.Stop // Done stops every goroutine (Close, or a fatal error)
	wg        sync.WaitGroup
	closeOnce sync.Once

	repairAt atomic.Int64 // ns: repair wait last set (failover goroutine); 0: not asking
	soloSeen string       // the single link last logged (health goroutine)

	// the reorder goroutine's repair requests (repair.go)
	repairSeqs    []uint32
	repairScratch []byte
	repairOne     [1][]byte // the batch of one Send takes (a local would escape: one allocation a message)
	repairMsgs    uint32
	offerRepair   atomic.Bool   // a path of ours loses packets of its own: the peer may ask
	firstDataNs   atomic.Int64  // when the first data packet left (repairStartup)
	firstUpNs     atomic.Int64  // when a path first came up (autoFallBack)
	repairRxNs    atomic.Int64  // when the peer last asked for a repair
	peerRepairs   atomic.Bool   // the peer offers repair: our reorder buffer may ask
	warned        bool          // the scheduler advice was logged (health goroutine)
	seq           uint32        // last sequence number used (TX goroutine)
	sentUpTo      atomic.Uint32 // every packet up to here has been handed to its socket

	epoch     uint64        // ours, in every keepalive
	peerEpoch atomic.Uint64 // the peer's as last heard; 0: none yet, or a peer that sends none
	epochMu   sync.Mutex    // orders a change of peerEpoch with the reorder buffer's reset

	// TUN write batch (reorder goroutine)
	tunBufs     [][]byte
	tunBatch    [][]byte
	tunBatchLen int

	redundancy redundancy // compiled cfg.Redundancy

	stateMu sync.Mutex
	stateCh chan struct{} // closed and replaced on every path state change

	Stats EngineStats
}

// EngineStats are the engine-wide counters.
type EngineStats struct {
	TUNRxPackets, TUNRxBytes atomic.Uint64 // read from the TUN
	TUNTxPackets, TUNTxBytes atomic.Uint64 // written to the TUN
	NoPath                   atomic.Uint64 // dropped: no path up
	NotIP                    atomic.Uint64 // dropped: TUN gave a non-IP packet (the TAP a frame shorter than an Ethernet header)
	TooBig                   atomic.Uint64 // dropped: the TAP gave a frame larger than its MTU and Ethernet header
	TUNReadErrors            atomic.Uint64
	TUNWriteErrors           atomic.Uint64
	PeerRestarts             atomic.Uint64 // the peer's epoch changed
	Redundant                atomic.Uint64 // packets also sent on a second path (redundancy)
	RepairAsked              atomic.Uint64 // lost sequences asked of the peer again
	Repaired                 atomic.Uint64 // packets sent again because the peer asked
	RepairMissed             atomic.Uint64 // asked for, but no longer kept (or no path up)
}

type enginePath struct {
	EnginePath
	idx    int
	local  atomic.Uint32 // IPv4 source of its inner control packets (SetLocal); 0 for an IPv6 path
	remote [4]byte       // IPv4 source the peer's inner control packets carry

	mu       sync.Mutex // health, probeSeq
	health   pathHealth
	probeSeq uint32

	txPackets, txBytes, txErrors atomic.Uint64
	rxPackets, rxBytes           atomic.Uint64
	peerTx                       atomic.Uint64 // packets the peer says it sent on this path
	rttNs                        atomic.Int64  // smoothed
	upNow                        atomic.Bool
	lastRxNs                     atomic.Int64   // last valid packet from the peer on this path
	rxActive                     bool           // in fast loss detection (health goroutine)
	excludedSeen                 path.Exclusion // the scheduler's verdict last logged (health goroutine)
	changes                      atomic.Uint64
	decode                       [header.NumDecodeErrors]atomic.Uint64
	authDrops                    [numAuthDrops]atomic.Uint64 // session.Drop reasons and the auth layer's own
	roam                         roamer                      // a UDP path's uplink: its remote follows the peer
	roams                        atomic.Uint64               // times the remote moved

	// the receiver's side of feedback (what arrived on the path), and the
	// sender's (what it sent, what feedback taught, what it keeps)
	fbMu                   sync.Mutex
	rx                     rxFeedback
	fbScratch              []byte // the receive loop's feedback buffer
	estMu                  sync.Mutex
	tx                     txLearning
	feedbackTx, feedbackRx atomic.Uint64
	stalls, resent         atomic.Uint64
	repaired               atomic.Uint64 // its packets sent again (on any path) because the peer asked
	lastDataNs             atomic.Int64  // when data last left on it
	lossObserved           atomic.Uint64 // packets its own loss was learned from (sent while it showed no queue)
	wmSent                 uint32        // the watermark its latest idle probe carried (failover goroutine)
	stalledAt              atomic.Int64  // when the latest stall began, ns
}

type packet struct {
	buf  []byte
	off  int
	n    int
	seq  uint32
	path int
}

// rxItem is a data packet, or (pkt == nil) a watermark from a keepalive,
// or (path itemEpochs, itemRestart) news of the peer's epoch for the reorder
// buffer: seq is 1 if the peer sends epochs.
type rxItem struct {
	pkt  *packet
	seq  uint32
	path int
}

type rxBatch struct{ items []rxItem }

const (
	itemEpochs  = -1 // the peer's first epoch heard (or none): SetStrict
	itemRestart = -2 // the peer restarted: Reset, then SetStrict
)

// reorderChange is a change for the reorder goroutine: a path leaving fast
// loss detection, or (path changeTimeout) a new timeout, or (path
// changeRepair) a new repair wait.
type reorderChange struct {
	path    int
	active  bool
	timeout time.Duration
}

const (
	changeTimeout = -1
	changeRepair  = -2
)

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
		delivery: make(chan *rxBatch, 256), reorderChanges: make(chan reorderChange, 64),
		stateCh: make(chan struct{}),
		seq:     cfg.firstSeq,
		epoch:   cfg.Epoch,
	}
	if e.seq == 0 {
		e.seq = rand.Uint32()
	}
	for e.epoch == 0 {
		var b [8]byte
		if _, err := crand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("engine: epoch: %w", err)
		}
		e.epoch = binary.BigEndian.Uint64(b[:])
	}
	if e.log == nil {
		e.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if e.now == nil {
		e.now = time.Now
	}
	if g, ok := cfg.Encap.(encap.GRE); ok {
		e.gre = g
	}
	if cfg.Auth != nil {
		if _, ok := cfg.Encap.(encap.GRE); !ok {
			return nil, errors.New("engine: auth needs the GRE encapsulation")
		}
		a, err := newAuth(*cfg.Auth, e.gre)
		if err != nil {
			return nil, fmt.Errorf("engine: auth: %w", err)
		}
		e.auth, e.epoch = a, a.hs.Epoch()
	}
	red, problems := cfg.Redundancy.compile()
	if len(problems) > 0 {
		return nil, fmt.Errorf("engine: %s", strings.Join(problems, "; "))
	}
	e.redundancy = red
	e.sentUpTo.Store(e.seq)
	weights := make([]uint32, len(cfg.Paths))
	for i, p := range cfg.Paths {
		weights[i] = p.Weight
		ep := &enginePath{EnginePath: p, idx: i, remote: as4(p.Remote),
			health:    pathHealth{interval: cfg.Keepalive, misses: cfg.Misses},
			fbScratch: controlScratch(header.FeedbackPacketLen)}
		ep.setLocal(p.Local)
		if r, ok := p.Uplink.(roamer); ok && roams(p.Uplink) {
			ep.roam = r
		}
		if _, gre := cfg.Encap.(encap.GRE); ep.roam != nil && !gre {
			return nil, fmt.Errorf("engine: path %s: a UDP path needs the GRE encapsulation", p.Name)
		}
		if cfg.Encap.Sequenced() {
			ep.tx = txLearning{log: path.NewSendLog(sendLogSequences), keep: newResendRing()}
		}
		e.paths = append(e.paths, ep)
	}
	e.pathSet = path.NewPaths(weights)
	for i, p := range cfg.Paths {
		e.pathSet.SetUp(i, false) // up on the first keepalive reply
		e.pathSet.SetCeiling(i, p.Ceiling)
	}
	var err error
	if e.sched, err = path.NewClocked(cfg.Scheduler, e.pathSet, e.now); err != nil {
		return nil, err
	}
	if e.gre.Frames {
		e.sched = path.ForFrames(e.sched)
	}
	if cfg.Encap.Sequenced() {
		rc := cfg.Reorder
		rc.Paths = len(cfg.Paths)
		if e.reorderBuf, err = reorder.New(rc, e.emit); err != nil {
			return nil, fmt.Errorf("reorder: %w", err)
		}
		for i := range e.paths {
			e.reorderBuf.SetActive(i, false, e.now())
		}
		if cfg.Repair {
			e.repairScratch = controlScratch(header.RepairMaxPacketLen)
		}
	}
	bufSize := encap.Headroom + max(cfg.MTU+cfg.Encap.Overhead(), 1500) + header.SealedOverhead + 64
	e.bufLen = bufSize
	e.packetPool.New = func() any { return &packet{buf: make([]byte, bufSize)} }
	e.batchPool.New = func() any { return &rxBatch{items: make([]rxItem, 0, 128)} }
	// With offloads on, wireguard's tun coalesces TCP segments (GRO) into
	// the first buffer of a flow, so write buffers are 64 KiB.
	wsize := tunWriteOffset + bufSize
	if dev.BatchSize() > 1 {
		wsize = tunWriteOffset + 65535
	}
	bs := max(dev.BatchSize(), 64)
	e.tunBufs = make([][]byte, bs)
	e.tunBatch = make([][]byte, bs)
	for i := range e.tunBufs {
		e.tunBufs[i] = make([]byte, wsize)
	}
	return e, nil
}

// Start runs the engine's goroutines.
func (e *Engine) Start() {
	e.wg.Add(3)
	go e.txLoop()
	go e.reorderLoop()
	go e.healthLoop()
	if e.reorderBuf != nil { // feedback needs sequences
		e.wg.Add(1)
		go e.failoverLoop()
	}
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
	e.closeOnce.Do(func() {
		e.life.Close()
		errs = append(errs, e.dev.Close())
		for _, p := range e.paths {
			errs = append(errs, p.Uplink.Close())
		}
		e.wg.Wait()
	})
	return errors.Join(errs...)
}

// Done is closed when the engine stops: by Close, or by itself on a fatal
// error (its TUN gone), which Err then returns.
func (e *Engine) Done() <-chan struct{} { return e.life.Done() }

// Err is why the engine stopped by itself, or nil.
func (e *Engine) Err() error { return e.life.Err() }

// fail stops the engine on an error it cannot go on after: its goroutines
// end, its paths are reported down (the peer's go down too, as the
// keepalives stop), and Done and Err tell the owner, who then calls Close.
func (e *Engine) fail(err error) {
	stopping := func() { // before Done: the owner sees the log line and the paths down
		e.log.Error("the bond stops", "err", err)
		now := e.now()
		for _, p := range e.paths {
			p.mu.Lock()
			if p.upNow.Load() {
				p.health.up = false
				e.setState(p, false, now)
			}
			p.mu.Unlock()
		}
	}
	e.life.Fail(err, stopping) // closing already: errors are expected
}

// roams reports whether a roamer's remote may follow the peer: a UDP
// uplink's does; one that says otherwise (a raw path's slot) does not.
func roams(u conn.Uplink) bool {
	if x, ok := u.(interface{ Roams() bool }); ok {
		return x.Roams()
	}
	return true
}

// setLocal records the path's local address for its inner control packets.
func (p *enginePath) setLocal(a netip.Addr) {
	b := as4(a)
	p.local.Store(binary.BigEndian.Uint32(b[:]))
}

// localAs4 is the source of the path's inner control packets.
func (p *enginePath) localAs4() [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], p.local.Load())
	return b
}

// setPathLocal tells the engine a path's local address changed (a path
// that names only its device, whose address came or moved).
func (e *Engine) setPathLocal(name string, a netip.Addr) error {
	p, err := e.path(name)
	if err != nil {
		return err
	}
	p.setLocal(a)
	return nil
}

// roamer is an uplink whose remote can move: UDP, whose peer may sit
// behind a NAT that changes its mapping, or be learned (no remote given).
type roamer interface {
	Remote() netip.AddrPort
	SetRemote(netip.AddrPort)
}

// controlScratch is a buffer for one control packet of n bytes (inner IPv4
// header included) at encap.Headroom, with the tailroom sealing needs.
func controlScratch(n int) []byte {
	return make([]byte, encap.Headroom+n+session.Tailroom)
}

// frameControl returns the packet carrying the inner control packet of n
// bytes (IPv4 header included) the caller wrote at scratch[encap.Headroom:]:
// in the encapsulation's header, or with auth, the bare message sealed (nil
// before the first session).
func (e *Engine) frameControl(scratch []byte, n int) []byte {
	if e.auth != nil {
		return e.auth.sealControl(scratch, n-header.IPv4HeaderLen)
	}
	return e.codec.WrapControl(scratch, n)
}

// encapData puts the tunnel header in front of the TUN packet buf[off:off+n]
// and, with auth, seals it; nil: dropped (not IP, or no session yet).
func (e *Engine) encapData(buf []byte, off, n int, seq uint32) []byte {
	if e.auth != nil {
		return e.auth.sealData(buf, off, n, seq)
	}
	return e.codec.EncapData(buf, off, n, seq)
}

func epochString(epoch uint64) string { return fmt.Sprintf("%016x", epoch) }

// as4 is a's four bytes; zero for no address (a remote still to learn).
func as4(a netip.Addr) [4]byte {
	if !a.Is4() {
		return [4]byte{}
	}
	return a.As4()
}
