package bond

import (
	"time"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Failover: a path whose feedback stops while it carries data leaves the
// scheduler within stallLimit (max(StallRTTs × its least RTT, StallMin) on
// an unqueued path), and what it was
// carrying that no feedback covered is sent again on the live path with the
// least RTT (the receiver's reorder buffer drops what arrives twice). A
// keepalive reply or a feedback on it puts it back.
const (
	StallRTTs = 3
	StallMin  = 50 * time.Millisecond
	// stallCheckEvery is how often the watchdog looks.
	stallCheckEvery = 5 * time.Millisecond
	// resendBytes is what each path keeps of its packets for re-sending: at
	// 300 Mbit/s, 110 ms of traffic.
	resendBytes = 4 << 20
	resendSlots = 1 << 13
	// maxResendPacket bounds a packet the ring keeps: a TUN packet is at
	// most an MTU plus the tunnel header.
	maxResendPacket = 1 << 16
)

// resendRing keeps copies of the latest data packets sent on a path (tunnel
// header and inner packet, as handed to the uplink: independent of the
// path), in a fixed arena written round. Positions count every byte ever
// taken from the arena (the tail skipped at a wrap included), so a packet's
// bytes are intact while fewer than len(arena) have been taken since it was
// written. Not safe for concurrent use (estMu).
type resendRing struct {
	arena []byte
	pos   uint64 // bytes ever taken from the arena
	ents  []resendEntry
	head  uint64 // entries written, ever
}

type resendEntry struct {
	seq      uint32
	pos      uint64 // where its bytes start, in ever-taken bytes
	len      int
	repaired bool // taken for a repair already
}

func newResendRing() *resendRing {
	return &resendRing{arena: make([]byte, resendBytes), ents: make([]resendEntry, resendSlots)}
}

func (r *resendRing) reset() { r.pos, r.head = 0, 0 }

// add keeps a copy of pkt, sent with sequence seq.
func (r *resendRing) add(seq uint32, pkt []byte) {
	if len(pkt) > maxResendPacket {
		return
	}
	size := uint64(len(r.arena))
	if off := r.pos % size; off+uint64(len(pkt)) > size {
		r.pos += size - off // the tail is too short: start again at 0
	}
	off := r.pos % size
	copy(r.arena[off:], pkt)
	r.ents[r.head%uint64(len(r.ents))] = resendEntry{seq: seq, pos: r.pos, len: len(pkt)}
	r.pos += uint64(len(pkt))
	r.head++
}

// after appends to out the packets kept with a sequence after seq, in the
// order they were sent, and returns it with how many such packets are no
// longer kept (their bytes written over; at least 1 if the index itself
// has forgotten some).
func (r *resendRing) after(seq uint32, out [][]byte) ([][]byte, int) {
	n := min(r.head, uint64(len(r.ents)))
	start := r.head // the first entry after seq
	for start > r.head-n && int32(r.ents[(start-1)%uint64(len(r.ents))].seq-seq) > 0 {
		start--
	}
	missed := 0
	if start == r.head-n && n == uint64(len(r.ents)) {
		missed++
	}
	size := uint64(len(r.arena))
	for g := start; g < r.head; g++ {
		e := r.ents[g%uint64(len(r.ents))]
		if r.pos-e.pos > size {
			missed++
			continue
		}
		off := e.pos % size
		out = append(out, r.arena[off:off+uint64(e.len)])
	}
	return out, missed
}

// takeForRepair reports whether the packet sent with seq is still kept
// intact, and returns its bytes unless a repair took them before (a
// request comes on two paths; a packet is sent again once).
func (r *resendRing) takeForRepair(seq uint32) (b []byte, kept bool) {
	b, i, ok := r.find(seq)
	if !ok {
		return nil, false
	}
	if r.ents[i].repaired {
		return nil, true
	}
	r.ents[i].repaired = true
	return b, true
}

// find returns the kept bytes of the packet sent with seq, if they are
// still intact, and its entry's index (entries are in send order, so their
// sequences increase).
func (r *resendRing) find(seq uint32) ([]byte, uint64, bool) {
	slots := uint64(len(r.ents))
	lo, hi := r.head-min(r.head, slots), r.head
	for lo < hi {
		mid := lo + (hi-lo)/2
		if int32(r.ents[mid%slots].seq-seq) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == r.head {
		return nil, 0, false
	}
	e := r.ents[lo%slots]
	size := uint64(len(r.arena))
	if e.seq != seq || r.pos-e.pos > size {
		return nil, 0, false
	}
	off := e.pos % size
	return r.arena[off : off+uint64(e.len)], lo % slots, true
}

// failoverLoop takes stalled paths out of the scheduler and re-sends what
// they were carrying; it also sends the feedback that a burst's tail owes.
func (e *Engine) failoverLoop() {
	defer e.wg.Done()
	t := time.NewTicker(stallCheckEvery)
	defer t.Stop()
	scratch := controlScratch(header.FeedbackPacketLen)
	for {
		select {
		case <-t.C:
		case <-e.life.Done():
			return
		}
		now := e.now().UnixNano()
		for _, p := range e.paths {
			e.flushFeedback(p, now, scratch)
		}
		e.probeIdlePaths(now, scratch)
		e.followRepair()
		for _, p := range e.paths {
			if !p.upNow.Load() || e.pathSet.Stalled(p.idx) {
				continue
			}
			p.estMu.Lock()
			first, fed := p.tx.firstUnfed, p.tx.fed
			minRTT, latest := p.tx.est.MinRTT(), p.tx.est.LatestRTT()
			p.estMu.Unlock()
			if !fed || first == 0 {
				continue // no feedback from this peer yet (or none missing)
			}
			if minRTT == 0 {
				minRTT = time.Duration(p.rttNs.Load())
			}
			limit := stallLimit(minRTT, latest)
			if silent := time.Duration(now - first); silent > limit {
				e.stall(p, silent, scratch)
			}
		}
	}
}

// probeIdlePaths sends a probe, carrying the watermark, on every up path
// that has carried no data for stallCheckEvery while data left on others:
// the receiver proves a hole lost only when every path has moved past it,
// and a path the scheduler leaves idle would otherwise move only with the
// keepalives, holding every loss on the busy paths to the reorder timeout
// (and out of repair).
func (e *Engine) probeIdlePaths(now int64, scratch []byte) {
	if e.reorderBuf == nil {
		return
	}
	upTo := e.sentUpTo.Load()
	for _, p := range e.paths {
		if !p.upNow.Load() || e.pathSet.Stalled(p.idx) || p.wmSent == upTo || now-p.lastDataNs.Load() < int64(stallCheckEvery) {
			continue
		}
		p.wmSent = upTo
		e.probe(p, scratch)
	}
}

// stall takes p out of the scheduler and re-sends its unacknowledged
// packets on the live path with the least RTT. The last live path is
// never stalled: there is nowhere to move its traffic, and a silence that
// queueing on the way back explains would leave the bond with no path.
// A probe goes on p at once, so a stall that only queueing caused ends
// with its reply, an RTT later, not with the next keepalive.
func (e *Engine) stall(p *enginePath, silent time.Duration, scratch []byte) {
	q := e.secondPath(p.idx)
	if q < 0 {
		// A new allowance: should another path come up while this one is
		// still silent, it is judged from now, not from long ago.
		p.estMu.Lock()
		p.tx.firstUnfed = e.now().UnixNano()
		p.estMu.Unlock()
		return
	}
	to := e.paths[q]
	p.stalledAt.Store(e.now().UnixNano())
	e.pathSet.SetStalled(p.idx, true)
	p.stalls.Add(1)
	p.estMu.Lock()
	pkts, missed := p.tx.keep.after(p.tx.fedUpTo, nil)
	// copies: the ring goes on taking packets (a resend on p's own uplink
	// never happens, but the tx loop may still be in p's batch)
	buf := make([]byte, 0, totalLen(pkts))
	for i, b := range pkts {
		buf = append(buf, b...)
		pkts[i] = buf[len(buf)-len(b):]
	}
	p.tx.firstUnfed = 0
	p.estMu.Unlock()
	e.probe(p, scratch)
	p.resent.Add(uint64(len(pkts)))
	for len(pkts) > 0 {
		n := min(len(pkts), 64)
		e.sendData(to, pkts[:n], nil, nil, 0)
		pkts = pkts[n:]
	}
	e.log.Warn("path stalled: no feedback under traffic; what it carried is re-sent", "path", p.Name,
		"silent_for", silent.Round(time.Millisecond), "resent_on", to.Name, "not_kept", missed)
}

// stallLimit is how long a path may carry data with no feedback reporting
// more delivered: StallRTTs of its least RTT (the feedback's, else the
// keepalives'), but no less than its latest RTT (queueing included) and two
// feedback intervals, nor than StallMin. Under steady traffic feedbacks
// come every FeedbackInterval whatever the queue, so a blackhole is found
// before the receiver's reorder timeout gives up what it held back, and
// the inner transport's retransmissions go on a live path.
func stallLimit(minRTT, latestRTT time.Duration) time.Duration {
	return max(StallRTTs*minRTT, latestRTT+2*FeedbackInterval, StallMin)
}

// unstall puts a stalled path back in the scheduler.
func (e *Engine) unstall(p *enginePath, why string) {
	if !e.pathSet.Stalled(p.idx) {
		return
	}
	e.pathSet.SetStalled(p.idx, false)
	e.log.Info("path back from a stall", "path", p.Name, "heard", why)
}

func totalLen(bs [][]byte) int {
	n := 0
	for _, b := range bs {
		n += len(b)
	}
	return n
}
