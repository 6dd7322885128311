package bond

import (
	"time"

	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// FeedbackInterval is the most time between two feedbacks on a path that
// carries data: the receiver reports after a batch of data once this much
// has passed since its last report, and with every keepalive otherwise.
const FeedbackInterval = 10 * time.Millisecond

// sendLogSequences is how many bond sequences each path's SendLog covers
// (2 MiB a path): at 1 Gbit/s of 1400-byte packets, 0.73 s of traffic.
const sendLogSequences = 1 << 16

// lossMemory is how many packets the smoothed loss of a path remembers.
const lossMemory = 1000

// rxFeedback is the receiver's side of one path: what has arrived on it
// from the peer's current epoch (fbMu).
type rxFeedback struct {
	have     bool   // data arrived since the peer's epoch was heard
	pending  bool   // data arrived since the latest feedback
	highest  uint32 // highest bond sequence received
	at       int64  // our clock when it arrived, ns
	bytes    uint64 // inner bytes received
	packets  uint64 // data packets received
	seq      uint32 // feedbacks sent
	lastSent int64  // when the latest feedback went, ns
}

// txLearning is the sender's side of one path: its SendLog, what its
// feedback taught, and the packets kept for re-sending (estMu).
type txLearning struct {
	log           *path.SendLog
	est           path.Estimate
	keep          *resendRing
	fedUpTo       uint32  // highest sequence the latest feedback covered
	fed           bool    // a feedback of the current epochs arrived
	firstUnfed    int64   // ns: send time of the first packet after the latest feedback; 0: none
	lossPPM       float64 // smoothed loss
	lastLost      uint64
	lastSent      uint64 // packets the path had carried up to the latest feedback's highest sequence
	lastDelivered uint64 // the latest feedback's DeliveredPackets
	troubleSeen   uint64 // the path's stalls + state changes at the latest feedback
}

// noteData counts a batch of data packets that arrived on p; called by
// its receive loop once a batch.
func (e *Engine) noteData(p *enginePath, highest uint32, bytes, packets uint64, now int64) {
	p.fbMu.Lock()
	r := &p.rx
	if !r.have || int32(highest-r.highest) > 0 {
		r.highest, r.at = highest, now
	}
	r.have, r.pending = true, true
	r.bytes += bytes
	r.packets += packets
	due := now-r.lastSent >= int64(FeedbackInterval)
	p.fbMu.Unlock()
	if due {
		e.sendFeedback(p, now, p.fbScratch)
	}
}

// flushFeedback reports on p what arrived since its latest feedback, once
// FeedbackInterval has passed: the tail of a burst is reported within an
// interval, not with the next keepalive (the sender would take the
// silence for a stall).
func (e *Engine) flushFeedback(p *enginePath, now int64, scratch []byte) {
	p.fbMu.Lock()
	due := p.rx.pending && now-p.rx.lastSent >= int64(FeedbackInterval)
	p.fbMu.Unlock()
	if due {
		e.sendFeedback(p, now, scratch)
	}
}

// sendFeedback reports what arrived on p, if anything did.
func (e *Engine) sendFeedback(p *enginePath, now int64, scratch []byte) {
	peer := e.peerEpoch.Load()
	if peer == 0 || e.reorderBuf == nil {
		return // a peer that sends no epochs reads no feedback; IPIP has no sequence
	}
	p.fbMu.Lock()
	r := &p.rx
	if !r.have {
		p.fbMu.Unlock()
		return
	}
	r.seq++
	r.lastSent, r.pending = now, false
	f := header.FeedbackFields{
		ControlFields: e.controlFields(p, header.ControlFeedback),
		HighestSeq:    r.highest, ReceivedAt: r.at, DeliveredBytes: r.bytes, DeliveredPackets: r.packets,
	}
	f.ProbeSeq, f.Timestamp = r.seq, now
	p.fbMu.Unlock()
	header.EncodeFeedbackPacket(scratch[encap.Headroom:], p.localAs4(), p.remote, f)
	if pkt := e.frameControl(scratch, header.FeedbackPacketLen); pkt != nil {
		e.sendRaw(p, pkt)
		p.feedbackTx.Add(1)
	}
}

// onFeedback takes the peer's report on what it received of our data on p.
func (e *Engine) onFeedback(p *enginePath, f header.FeedbackFields, now time.Time) {
	if f.PeerEpoch != e.epoch {
		return // about an earlier start of ours
	}
	p.feedbackRx.Add(1)
	t := now.UnixNano()
	p.estMu.Lock()
	l := &p.tx
	appLimited := e.pathSet.IdleAt(p.idx) > l.est.LastFeedback() // the scheduler found it with room to spare since
	s := l.est.OnFeedback(t, f, l.log, appLimited)
	if s.Stale {
		p.estMu.Unlock()
		return
	}
	sent, inLog := l.log.Lookup(f.HighestSeq)
	// Only a feedback that reports more delivered shows the path carries
	// data (an idle path's feedback goes on with the keepalives, repeating
	// the counters): then what is still unreported was sent after
	// HighestSeq, and gets a new allowance from now.
	if f.DeliveredPackets > l.lastDelivered || !l.fed {
		l.lastDelivered = f.DeliveredPackets
		if hi, ok := l.log.Highest(); inLog && ok && hi == f.HighestSeq {
			l.firstUnfed = 0
		} else if l.firstUnfed != 0 {
			l.firstUnfed = t
		}
	}
	if inLog {
		// Loss where the path shows no queue is the path's own (radio, a
		// bad line); loss behind a queue is the flows' congestion, which
		// every bottleneck has and which says nothing against the path.
		// Nor is what a stall or an outage took: a sample that spans one
		// (a blackhole's every packet) would make the path lossy for long
		// after it is back (the lab's blackhole: the bond then ran the
		// path in and out by trial, 93 Mbit/s of 200 after the fault).
		// The first sample with new data after a stall or a state change
		// is skipped (the feedbacks during the outage carried none).
		troubled := false
		if t := p.stalls.Load() + p.changes.Load(); s.HasLost && sent.Packets > l.lastSent && t != l.troubleSeen {
			troubled, l.troubleSeen = true, t
		}
		if l.fed && !troubled && s.HasLost && s.Lost >= l.lastLost && sent.Packets > l.lastSent && l.est.QueueDelay() < path.QueueSignificant {
			n := float64(sent.Packets - l.lastSent)
			sample := float64(s.Lost-l.lastLost) / n * 1e6
			g := min(n/lossMemory, 1)
			l.lossPPM += (sample - l.lossPPM) * g
			p.lossObserved.Add(sent.Packets - l.lastSent)
		}
		l.lastLost, l.lastSent = s.Lost, sent.Packets
		l.fedUpTo, l.fed = f.HighestSeq, true
	}
	learned := path.Learned{Feedback: now, LossPPM: uint32(min(l.lossPPM, 1e6)), Delivered: f.DeliveredBytes}
	learned.Rate, _ = l.est.DeliveryRate()
	learned.BaseOWD, _ = l.est.BaseOneWay()
	learned.Queue = l.est.QueueDelay()
	p.estMu.Unlock()
	e.pathSet.SetLearned(p.idx, learned)
	if e.pathSet.Stalled(p.idx) {
		e.unstall(p, "feedback")
	}
}

// forgetLearning starts every path's learning afresh: the peer restarted,
// so its counters did too (and so must ours of what it received).
func (e *Engine) forgetLearning() {
	if e.reorderBuf == nil {
		return // no sequences, no feedback
	}
	for _, p := range e.paths {
		p.estMu.Lock()
		p.tx.log.Reset()
		p.tx.est.Reset()
		p.tx.keep.reset()
		p.tx = txLearning{log: p.tx.log, keep: p.tx.keep}
		p.estMu.Unlock()
		p.fbMu.Lock()
		p.rx = rxFeedback{}
		p.fbMu.Unlock()
		e.pathSet.ForgetLearned(p.idx)
		e.pathSet.SetStalled(p.idx, false)
	}
}
