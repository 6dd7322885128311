// Package reorder puts the packets of a bond back in sequence order before
// they reach the TUN. It is pure logic: the caller passes the time in, so
// tests drive it with a fake clock.
package reorder

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Config sets the buffer's limits.
type Config struct {
	Window  int           // most packets held; a packet further ahead forces the oldest out
	Timeout time.Duration // longest wait for a missing packet
	// LossGrace is the least time a hole that every path has moved past is
	// still waited for: paths are FIFO only nearly (a veth queues to per-CPU
	// backlogs, a NIC's queues are per CPU, and a slow bottleneck stretches
	// microseconds of that into its serialisation time), so a packet may
	// trail a later one on its own path. Like RACK's reordering window, the
	// grace adapts: when a packet given up this way arrives after all, the
	// grace grows to what it would have needed (at most Timeout), and it
	// shrinks back by an eighth each second without such an arrival.
	LossGrace time.Duration
	Paths     int // number of paths feeding the buffer (for fast loss detection)
}

// Stats are counters read concurrently by the metrics collector.
type Stats struct {
	Released      atomic.Uint64 // packets handed on in order (late ones are LateDelivered, not here)
	Holes         atomic.Uint64 // missing sequence numbers given up, for any reason
	HolesTimeout  atomic.Uint64 // ... after waiting Timeout
	HolesLost     atomic.Uint64 // ... because every path had moved past them (fast loss detection)
	HolesOverflow atomic.Uint64 // ... because the window was full
	Overflow      atomic.Uint64 // packets released early because the window was full
	// LateDelivered counts packets handed on at once, out of order, because
	// their sequence had been given up as a hole (timeout, fast loss
	// detection or overflow) within the last window and never delivered:
	// the inner transport sees reordering instead of a loss. Each hole is
	// delivered at most once; Released + LateDelivered is all handed on.
	LateDelivered atomic.Uint64
	// Late counts packets dropped because they were behind what was already
	// released, by at most a window, and not a hole still owed: a copy of a
	// packet already handed on (in order, or late and counted in
	// LateDelivered), or a sequence never given up as a hole (before the
	// stream's start, or skipped by Flush or Reset). Further behind is a
	// Resync, or OutOfWindow with SetStrict.
	Late        atomic.Uint64
	Duplicate   atomic.Uint64 // dropped: already held
	Resync      atomic.Uint64 // sequence restarted (peer restart guessed, without epochs): buffer flushed
	OutOfWindow atomic.Uint64 // dropped: far outside the window within one epoch (SetStrict): a bug or a forgery
	Spurious    atomic.Uint64 // holes fast loss detection gave up whose packet arrived after all (delivered late or not)
	RepairAsked atomic.Uint64 // holes proven lost and asked for again (SetRepair)
	Repaired    atomic.Uint64 // holes asked for whose packet then arrived in time to go in order
	GraceNs     atomic.Int64  // the current loss grace
	TimeoutNs   atomic.Int64  // the current timeout
	Depth       atomic.Int64  // packets held now
	Wait        Histogram     // time released packets spent held
}

type slot[T any] struct {
	item    T
	at      time.Time
	present bool
}

// Buffer reorders items of type T (the caller's packet handle). It is not
// safe for concurrent use: one goroutine owns it.
type Buffer[T any] struct {
	cfg     Config
	slots   []slot[T]
	release func(T)
	next    uint32 // next sequence number to release
	started bool
	// top is the highest sequence accepted or announced by a watermark;
	// valid once started.
	top uint32
	// strict: the sender's epoch is known (SetStrict), so a sequence far
	// outside the window is dropped, never taken for a restart.
	strict bool
	held   int
	// holeSince is when the hole at next was first seen (the earliest
	// arrival of a held packet); valid while held > 0.
	holeSince time.Time
	// arrived lists the sequences stored, in arrival order (a ring of
	// arrHead..arrTail): after the head moves, the first one still held
	// arrived first, so the new hole's holeSince is found without a scan of
	// the window. Entries of released sequences are dropped as they come to
	// the front. It holds at most a window of held sequences and a window
	// of released ones behind the oldest held, so twice the window never
	// overflows.
	arrived          []uint32
	arrHead, arrTail uint32
	// wm[p] is the highest sequence number known to have left on path p
	// before everything received on p so far; paths deliver in order.
	wm     []uint32
	wmOK   []bool
	active []bool
	// grace is the adaptive loss grace; gaveUp remembers recent holes given
	// up by fast loss detection, to recognise them if they turn up.
	grace   time.Duration
	graceAt time.Time // last grow or shrink
	gaveUp  [1024]gaveUp
	// owed has a bit per sequence the window moved past, indexed by
	// seq&owedMask: 1 if it was given up as a hole and its packet has not
	// arrived since, 0 if it was handed on (or its late packet was). Every
	// sequence passed is written, so a bit is never stale: it has more bits
	// (a power of two, for a mapping that survives the uint32 wrap) than
	// the window, and only sequences at most a window behind next are read.
	owed     []uint64
	owedMask uint32
	// Repair (SetRepair): holes proven lost are asked for once each, in
	// sequence order (every one before askedTo has been looked at), and the
	// head hole is waited for repairWait after it was asked for.
	repairWait time.Duration // as set; used as min(repairWait, Timeout)
	ask        func(seq uint32)
	askedTo    uint32
	askedOK    bool
	asks       []gaveUp // indexed like slots: every hole of the window may be asked for at once
	Stats      Stats
}

type gaveUp struct {
	seq   uint32
	since time.Time // when the hole was first seen
	ok    bool
}

// New returns a buffer that hands released items to release, in order.
func New[T any](cfg Config, release func(T)) (*Buffer[T], error) {
	if cfg.Window < 1 || cfg.Window > 1<<20 {
		return nil, fmt.Errorf("window %d out of range 1..1048576", cfg.Window)
	}
	if cfg.Timeout <= 0 {
		return nil, fmt.Errorf("timeout %v must be positive", cfg.Timeout)
	}
	if cfg.LossGrace < 0 || cfg.LossGrace > cfg.Timeout {
		return nil, fmt.Errorf("loss grace %v must be between 0 and the timeout %v", cfg.LossGrace, cfg.Timeout)
	}
	bits := uint32(64)
	for bits < uint32(cfg.Window) {
		bits <<= 1
	}
	b := &Buffer[T]{cfg: cfg, slots: make([]slot[T], cfg.Window), release: release,
		wm: make([]uint32, cfg.Paths), wmOK: make([]bool, cfg.Paths), active: make([]bool, cfg.Paths),
		owed: make([]uint64, bits/64), owedMask: bits - 1, asks: make([]gaveUp, cfg.Window),
		arrived: make([]uint32, 2*bits)}
	for i := range b.active {
		b.active[i] = true
	}
	b.grace = cfg.LossGrace
	b.Stats.GraceNs.Store(int64(b.grace))
	b.Stats.TimeoutNs.Store(int64(cfg.Timeout))
	return b, nil
}

func (b *Buffer[T]) slot(seq uint32) *slot[T] { return &b.slots[seq%uint32(len(b.slots))] }

// skip gives up the hole at next: its packet, if it turns up within a
// window, is still handed on (LateDelivered).
func (b *Buffer[T]) skip() {
	i := b.next & b.owedMask
	b.owed[i/64] |= 1 << (i % 64)
	b.next++
}

// skipTo gives up every hole from next to upTo (nothing is held there).
func (b *Buffer[T]) skipTo(upTo uint32) {
	n := upTo - b.next
	if n > b.owedMask {
		for i := range b.owed {
			b.owed[i] = ^uint64(0)
		}
		b.next = upTo
		return
	}
	for ; n > 0 && b.next&63 != 0; n-- {
		b.skip()
	}
	for ; n >= 64; n -= 64 {
		b.owed[(b.next&b.owedMask)/64] = ^uint64(0)
		b.next += 64
	}
	for ; n > 0; n-- {
		b.skip()
	}
}

// owedLate reports whether seq, behind next by at most a window, was given
// up as a hole and not delivered since, and clears that record.
func (b *Buffer[T]) owedLate(seq uint32) bool {
	i := seq & b.owedMask
	w, bit := &b.owed[i/64], uint64(1)<<(i%64)
	if *w&bit == 0 {
		return false
	}
	*w &^= bit
	return true
}

// Held returns the number of packets waiting.
func (b *Buffer[T]) Held() int { return b.held }

// Push adds a packet with sequence seq received on path at time now, and
// releases what is now in order. A packet behind what was released is
// handed on at once if its sequence was given up as a hole within the last
// window and not delivered since (Stats.LateDelivered), else dropped. It
// returns false if the packet was dropped (late, duplicate or out of
// window); the item then still belongs to the caller.
func (b *Buffer[T]) Push(seq uint32, path int, item T, now time.Time) bool {
	if !b.started {
		b.started, b.next, b.top = true, seq, seq
	}
	d := int64(int32(seq - b.next))
	w := int64(len(b.slots))
	if b.strict && (d < -w || int64(int32(seq-b.top)) >= w) {
		// Within one epoch nothing legitimate is this far behind what was
		// released, or a window beyond everything seen or announced: drop
		// it before it moves the window or a path's watermark.
		b.Stats.OutOfWindow.Add(1)
		return false
	}
	b.noteWatermark(path, seq)
	if int32(seq-b.top) > 0 {
		b.top = seq
	}
	switch {
	case d < -w:
		// Far behind what we released, and the sender sends no epochs:
		// guess that it restarted its sequence.
		b.Stats.Resync.Add(1)
		b.Flush(now)
		b.next, b.top = seq, seq
		d = 0
	case d < 0:
		b.spurious(seq, now)
		if b.owedLate(seq) {
			// Its hole was given up: hand it on now, out of order, rather
			// than turn a late packet into a loss.
			b.Stats.LateDelivered.Add(1)
			b.release(item)
			b.advance(now)
			return true
		}
		b.Stats.Late.Add(1)
		b.advance(now)
		return false
	case d >= w:
		b.overflow(seq-uint32(w)+1, now)
	}
	s := b.slot(seq)
	if s.present {
		b.Stats.Duplicate.Add(1)
		return false
	}
	s.item, s.at, s.present = item, now, true
	if b.arrTail-b.arrHead < uint32(len(b.arrived)) {
		b.arrived[b.arrTail&uint32(len(b.arrived)-1)] = seq
		b.arrTail++
	}
	if a := &b.asks[seq%uint32(len(b.asks))]; a.ok && a.seq == seq {
		a.ok = false
		b.Stats.Repaired.Add(1)
	}
	if b.held == 0 || now.Before(b.holeSince) {
		b.holeSince = now
	}
	b.held++
	b.advance(now)
	return true
}

// Watermark records that every packet up to seq meant for path has left the
// sender before something that has now arrived on that path (a keepalive).
// Before any data, a watermark also sets where the sequence starts, so the
// first packets are not judged by whichever happens to arrive first.
func (b *Buffer[T]) Watermark(path int, seq uint32, now time.Time) {
	if !b.started {
		b.started, b.next, b.top = true, seq+1, seq
	}
	if int32(seq-b.top) > 0 {
		b.top = seq // the sender has sent this far: data up to a window beyond is in the stream
	}
	b.noteWatermark(path, seq)
	b.advance(now)
}

// SetStrict says whether the sender's epoch is known (its keepalives carry
// epochs). Then a sequence more than a window behind what was released, or
// a window ahead of the highest sequence accepted or announced by a
// watermark, is a bug or a forgery: it is dropped and counted (OutOfWindow)
// and never waited for. A real jump of the stream (every path lost more
// than a window) is accepted once a keepalive's watermark announces it.
// Without epochs a sequence far behind is taken for a restart (Resync).
func (b *Buffer[T]) SetStrict(strict bool) { b.strict = strict }

// Reset forgets the sender's stream, when it restarted (a new epoch): what
// is held is released in order (packets the sender did send), holes are
// skipped without being counted, and the paths' watermarks, the give-ups
// remembered and the start of the sequence are forgotten; the next Push or
// Watermark starts the stream again. The adaptive grace and timeout, and
// which paths are active, stay: they describe the paths, not the sender.
func (b *Buffer[T]) Reset(now time.Time) {
	b.Flush(now)
	b.started, b.next, b.top = false, 0, 0
	for i := range b.wm {
		b.wm[i], b.wmOK[i] = 0, false
	}
	b.gaveUp = [len(b.gaveUp)]gaveUp{}
	clear(b.asks)
	b.askedOK = false
}

// SetActive includes or excludes a path from fast loss detection: a silent
// path's stale watermark must not hold holes until the timeout. Anything
// received on a path (Push, Watermark) makes it active again.
func (b *Buffer[T]) SetActive(path int, active bool, now time.Time) {
	b.active[path] = active
	b.advance(now)
}

func (b *Buffer[T]) noteWatermark(path int, seq uint32) {
	if path < 0 || path >= len(b.wm) {
		return
	}
	b.active[path] = true
	if !b.wmOK[path] || int32(seq-b.wm[path]) > 0 {
		b.wm[path], b.wmOK[path] = seq, true
	}
}

// lost reports whether the missing seq can no longer arrive: every active
// path has delivered (or announced) something sent after it.
func (b *Buffer[T]) lost(seq uint32) bool {
	n := 0
	for p, a := range b.active {
		if !a {
			continue
		}
		if !b.wmOK[p] || int32(b.wm[p]-seq) < 0 {
			return false
		}
		n++
	}
	return n > 0
}

// SetRepair turns repair on (wait > 0) or off: a hole that fast loss
// detection proves lost is handed to ask (once, from the goroutine that
// owns the buffer, in sequence order) for the caller to have it sent again,
// and is waited for wait more (never past Timeout) before it is given up.
// So the inner transport sees a packet that the paths lost arrive a repair
// round trip late instead of not at all. Without repair such a hole is
// given up as soon as the loss grace allows.
func (b *Buffer[T]) SetRepair(wait time.Duration, ask func(seq uint32)) {
	if wait <= 0 || ask == nil {
		wait, ask = 0, nil
	}
	b.repairWait, b.ask = wait, ask
	b.askedOK = false // what was looked at while off was not asked for
}

// wait is the repair wait in force: never past the timeout.
func (b *Buffer[T]) wait() time.Duration { return min(b.repairWait, b.cfg.Timeout) }

// lowWatermark is the least watermark of the active paths: every sequence
// up to it that has not arrived is lost. ok is false while an active path
// has none, or none is active.
func (b *Buffer[T]) lowWatermark() (uint32, bool) {
	var lo uint32
	n := 0
	for p, a := range b.active {
		if !a {
			continue
		}
		if !b.wmOK[p] {
			return 0, false
		}
		if n == 0 || int32(b.wm[p]-lo) < 0 {
			lo = b.wm[p]
		}
		n++
	}
	return lo, n > 0
}

// askLost asks for every hole proven lost that has not been asked for yet.
// Each sequence of the window is looked at once.
func (b *Buffer[T]) askLost(now time.Time) {
	if b.ask == nil || b.held == 0 {
		return
	}
	lo, ok := b.lowWatermark()
	if !ok {
		return
	}
	seq := b.next
	end := b.next + uint32(len(b.slots)) // the window's end: nothing is held past it
	if b.askedOK && int32(b.askedTo-seq) > 0 && int32(end-b.askedTo) >= 0 {
		seq = b.askedTo
	}
	for ; int32(lo-seq) >= 0 && int32(end-seq) > 0; seq++ {
		if b.slot(seq).present {
			continue
		}
		b.asks[seq%uint32(len(b.asks))] = gaveUp{seq: seq, since: now, ok: true}
		b.Stats.RepairAsked.Add(1)
		b.ask(seq)
	}
	b.askedTo, b.askedOK = seq, true
}

// askedAt returns when seq was asked for, if it was and is remembered.
func (b *Buffer[T]) askedAt(seq uint32) (time.Time, bool) {
	a := b.asks[seq%uint32(len(b.asks))]
	return a.since, a.ok && a.seq == seq
}

// advance releases the in-order run at the head and gives up holes that
// fast loss detection proves lost (with repair, once the repair had its
// time).
func (b *Buffer[T]) advance(now time.Time) {
	moved := false
	b.askLost(now)
	for b.held > 0 {
		s := b.slot(b.next)
		if s.present {
			b.pop(s, now)
			moved = true
			continue
		}
		if !b.lost(b.next) || now.Before(b.holeSince.Add(b.grace)) {
			break
		}
		if at, ok := b.askedAt(b.next); ok && b.ask != nil && now.Before(at.Add(b.wait())) {
			break
		}
		b.Stats.HolesLost.Add(1)
		b.Stats.Holes.Add(1)
		b.gaveUp[b.next%uint32(len(b.gaveUp))] = gaveUp{seq: b.next, since: b.holeSince, ok: true}
		b.skip()
		moved = true
	}
	if moved && b.held > 0 {
		b.resetHoleSince()
	}
	if b.held == 0 {
		b.arrHead = b.arrTail // every entry is of a released sequence
	}
	b.Stats.Depth.Store(int64(b.held))
	if b.grace > b.cfg.LossGrace && now.Sub(b.graceAt) >= time.Second {
		b.grace = max(b.cfg.LossGrace, b.grace-b.grace/8)
		b.graceAt = now
		b.Stats.GraceNs.Store(int64(b.grace))
	}
}

// spurious handles a late packet: if it is a hole fast loss detection gave
// up, the grace was too short, and grows to what this packet needed.
func (b *Buffer[T]) spurious(seq uint32, now time.Time) {
	g := &b.gaveUp[seq%uint32(len(b.gaveUp))]
	if !g.ok || g.seq != seq {
		return
	}
	g.ok = false
	b.Stats.Spurious.Add(1)
	need := now.Sub(g.since) * 5 / 4
	if need > b.grace {
		b.grace = min(need, b.cfg.Timeout)
		b.Stats.GraceNs.Store(int64(b.grace))
	}
	b.graceAt = now
}

func (b *Buffer[T]) pop(s *slot[T], now time.Time) {
	item := s.item
	b.Stats.Wait.Observe(now.Sub(s.at))
	var zero T
	s.item, s.present = zero, false
	b.held--
	i := b.next & b.owedMask
	b.owed[i/64] &^= 1 << (i % 64)
	b.next++
	b.Stats.Released.Add(1)
	b.release(item)
}

// resetHoleSince sets holeSince to the earliest arrival among held packets:
// the moment the new head hole became known. The first sequence of arrived
// still held is that packet (arrivals are pushed with a clock that does not
// go back); only if arrived lost track (it cannot, sized as it is) is the
// window scanned.
func (b *Buffer[T]) resetHoleSince() {
	mask := uint32(len(b.arrived) - 1)
	for b.arrHead != b.arrTail {
		seq := b.arrived[b.arrHead&mask]
		if d := seq - b.next; d < uint32(len(b.slots)) && b.slot(seq).present {
			b.holeSince = b.slot(seq).at
			return
		}
		b.arrHead++
	}
	seen := 0
	var first time.Time
	for seq := b.next; seen < b.held; seq++ {
		s := b.slot(seq)
		if s.present {
			if seen == 0 || s.at.Before(first) {
				first = s.at
			}
			seen++
		}
	}
	b.holeSince = first
}

// SetTimeout changes the longest wait for a missing packet (the endpoint
// raises it to cover the measured delay difference between paths).
func (b *Buffer[T]) SetTimeout(d time.Duration, now time.Time) {
	if d <= 0 {
		return
	}
	b.cfg.Timeout = d
	b.grace = min(b.grace, d)
	b.Stats.TimeoutNs.Store(int64(d))
	b.Stats.GraceNs.Store(int64(b.grace))
	b.Expire(now)
}

// Timeout returns the current longest wait for a missing packet.
func (b *Buffer[T]) Timeout() time.Duration { return b.cfg.Timeout }

// Deadline returns when Expire must next run, if a hole is being waited
// for: the end of the loss grace (or of the repair wait, if later) if the
// paths have moved past the hole, else the timeout.
func (b *Buffer[T]) Deadline() (time.Time, bool) {
	if b.held == 0 {
		return time.Time{}, false
	}
	timeout := b.holeSince.Add(b.cfg.Timeout)
	if b.lost(b.next) {
		d := b.holeSince.Add(b.grace)
		if at, ok := b.askedAt(b.next); ok && b.ask != nil && at.Add(b.wait()).After(d) {
			d = at.Add(b.wait())
		}
		if d.After(timeout) {
			d = timeout
		}
		return d, true
	}
	return timeout, true
}

// Expire gives up holes proven lost once their grace is over, and holes that
// have been waited for Timeout, and releases the packets behind them.
func (b *Buffer[T]) Expire(now time.Time) {
	b.advance(now)
	for b.held > 0 && !now.Before(b.holeSince.Add(b.cfg.Timeout)) {
		for !b.slot(b.next).present {
			b.Stats.HolesTimeout.Add(1)
			b.Stats.Holes.Add(1)
			b.skip()
		}
		b.advance(now)
	}
	b.Stats.Depth.Store(int64(b.held))
}

// overflow releases or skips everything before upTo, so that upTo+window-1 fits.
func (b *Buffer[T]) overflow(upTo uint32, now time.Time) {
	for b.held > 0 && int32(upTo-b.next) > 0 {
		if s := b.slot(b.next); s.present {
			b.Stats.Overflow.Add(1)
			b.pop(s, now)
		} else {
			b.Stats.HolesOverflow.Add(1)
			b.Stats.Holes.Add(1)
			b.skip()
		}
	}
	if int32(upTo-b.next) > 0 {
		gap := uint64(upTo - b.next)
		b.Stats.HolesOverflow.Add(gap)
		b.Stats.Holes.Add(gap)
		b.skipTo(upTo)
	}
	if b.held > 0 {
		b.resetHoleSince() // the hole now at the head was seen when the first packet still held came
	} else {
		b.arrHead = b.arrTail // every entry is of a released sequence
	}
	b.Stats.Depth.Store(int64(b.held))
}

// Flush releases everything held, in order, skipping holes (at stop, or on
// a sequence restart). It forgets the holes given up so far: no packet from
// before a Flush is delivered late.
func (b *Buffer[T]) Flush(now time.Time) {
	for b.held > 0 {
		if s := b.slot(b.next); s.present {
			b.pop(s, now)
		} else {
			b.next++
		}
	}
	clear(b.owed)
	b.arrHead = b.arrTail // nothing is held
	b.Stats.Depth.Store(0)
}
