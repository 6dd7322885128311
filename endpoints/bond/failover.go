package bond

import (
	"time"
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
	// maxResendPacket bounds a packet the ring keeps.
	maxResendPacket = 1 << 16
)

// resendRing keeps copies of the latest data packets sent on a path (tunnel
// header and inner packet, as handed to the uplink: independent of the
// path), in a fixed arena. Not safe for concurrent use (estMu).
type resendRing struct {
	arena []byte
	at    int // next write offset in arena
	ents  []resendEntry
	head  uint64 // entries written, ever
}

type resendEntry struct {
	seq      uint32
	off, len int
}

func newResendRing() *resendRing {
	return &resendRing{arena: make([]byte, resendBytes), ents: make([]resendEntry, resendSlots)}
}

func (r *resendRing) reset() { r.at, r.head = 0, 0 }

// add keeps a copy of pkt, sent with sequence seq.
func (r *resendRing) add(seq uint32, pkt []byte) {
	if len(pkt) > maxResendPacket {
		return
	}
	if r.at+len(pkt) > len(r.arena) {
		r.at = 0
	}
	copy(r.arena[r.at:], pkt)
	r.ents[r.head%uint64(len(r.ents))] = resendEntry{seq: seq, off: r.at, len: len(pkt)}
	r.at += len(pkt)
	r.head++
}

// after appends to out the packets kept with a sequence after seq (in the
// order they were sent) whose bytes are still in the arena, and returns it
// with how many such packets were no longer kept.
func (r *resendRing) after(seq uint32, out [][]byte) ([][]byte, int) {
	n := min(r.head, uint64(len(r.ents)))
	// Walk back from the newest to the first one after seq, then forward.
	start := r.head
	for k := uint64(0); k < n; k++ {
		e := &r.ents[(r.head-1-k)%uint64(len(r.ents))]
		if int32(e.seq-seq) <= 0 {
			break
		}
		start = r.head - 1 - k
	}
	// An entry is intact while less than the arena was written after it
	// (with a packet's worth to spare: a wrap leaves the arena's tail unused).
	var written int
	missed := 0
	intact := make([]bool, 0, r.head-start)
	for g := r.head; g > start; g-- {
		e := &r.ents[(g-1)%uint64(len(r.ents))]
		written += e.len
		intact = append(intact, written+maxResendPacket <= len(r.arena))
	}
	for g, k := start, len(intact)-1; g < r.head; g, k = g+1, k-1 {
		e := &r.ents[g%uint64(len(r.ents))]
		if !intact[k] {
			missed++
			continue
		}
		out = append(out, r.arena[e.off:e.off+e.len])
	}
	if r.head-start == n && n == uint64(len(r.ents)) {
		missed++ // older ones were overwritten in the index: at least one
	}
	return out, missed
}

// failoverLoop takes stalled paths out of the scheduler and re-sends what
// they were carrying.
func (e *Engine) failoverLoop() {
	defer e.wg.Done()
	t := time.NewTicker(stallCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-e.life.Done():
			return
		}
		now := e.now().UnixNano()
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
				e.stall(p, silent)
			}
		}
	}
}

// stall takes p out of the scheduler and re-sends its unacknowledged
// packets on the live path with the least RTT.
func (e *Engine) stall(p *enginePath, silent time.Duration) {
	p.stalledAt.Store(e.now().UnixNano())
	e.pathSet.SetStalled(p.idx, true)
	p.stalls.Add(1)
	var to *enginePath
	for _, q := range e.paths {
		if q == p || !q.upNow.Load() || e.pathSet.Stalled(q.idx) {
			continue
		}
		if to == nil || q.rttNs.Load() < to.rttNs.Load() {
			to = q
		}
	}
	p.estMu.Lock()
	var pkts [][]byte
	missed := 0
	if to != nil {
		pkts, missed = p.tx.keep.after(p.tx.fedUpTo, nil)
		// copies: the ring goes on taking packets (a resend on p's own
		// uplink never happens, but the tx loop may still be in p's batch)
		buf := make([]byte, 0, totalLen(pkts))
		for i, b := range pkts {
			buf = append(buf, b...)
			pkts[i] = buf[len(buf)-len(b):]
		}
	}
	p.tx.firstUnfed = 0
	p.estMu.Unlock()
	if to == nil {
		e.log.Warn("path stalled: no feedback under traffic, and no other path to re-send on", "path", p.Name,
			"silent_for", silent.Round(time.Millisecond))
		return
	}
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
