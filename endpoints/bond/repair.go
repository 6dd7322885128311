package bond

import (
	"time"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// Repair: the receiver asks again for what the paths lost, so the inner
// flows see a loss arrive a round trip late instead of not at all (cubic
// halves its window at every loss it sees; a lossy radio link would cut a
// flow spread over it below the clean link alone). The reorder buffer
// finds a loss (every path moved past a hole), asks for it once and holds
// the hole repairWait; the receiver sends the sequences in repair messages
// on its best path; the sender finds each in the resend ring of the path
// that carried it and sends it again on the fastest path (repairPath).

// repairWait is how long a hole asked for is held: the repair's round trip
// (twice the least smoothed RTT of the up paths, the request and the
// re-sent packet each taking a one-way trip with the queues as they were)
// and repairMargin; the reorder buffer bounds it by its timeout.
func repairWait(leastRTT time.Duration) time.Duration {
	return 2*leastRTT + repairMargin
}

const repairMargin = 10 * time.Millisecond

// A path's packets are worth repairing when it is lossy as the adaptive
// scheduler judges (path.LossyAgainst at path.LossyPPM, its own loss
// learned where it shows no queue): losses of a clean path are the flows'
// congestion, which the inner transports must see (the lab's symmetric
// profile with every loss repaired: thousands of holes held to the timeout
// behind full queues, 172 Mbit/s under BBR).

// Until a path has shown itself clean (under path.LossyPPM) on
// repairEvidence packets sent while it showed no queue, for at most
// repairStartup from the first data, repair is offered whatever the paths'
// loss: learning it takes tens of milliseconds of feedback, and a
// loss-based inner flow that meets a loss in slow start leaves slow start
// for good (lossy profile, cubic: 27.8 Mbit/s with the first 5 losses
// unrepaired, 54-56 with them repaired; the clean link alone 47.8). A clean
// path shows itself before slow start fills its queue, and a lossy one is
// learned lossy on fewer packets, so the overshoot's congestion drops are
// mostly not repaired (offered for the whole 2 s, they were: BBR on the
// symmetric profile, 5203 repairs, 1426 holes to the timeout; and until
// every path had shown itself, the LTE of fiber-lte, which carries little,
// kept it on: 3998 repairs, 2844 holes to the timeout).
const (
	repairStartup  = 2 * time.Second
	repairEvidence = 300
)

// repairRTT is the least smoothed RTT of the up paths, 0 if none.
func (e *Engine) repairRTT() time.Duration {
	var least time.Duration
	for _, p := range e.paths {
		if !p.upNow.Load() {
			continue
		}
		if r := time.Duration(p.rttNs.Load()); r > 0 && (least == 0 || r < least) {
			least = r
		}
	}
	return least
}

// repairAsking reports whether our reorder buffer asks for repairs (the
// peer offers them, and the wait is set).
func (e *Engine) repairAsking() bool { return e.repairAt.Load() > 0 }

// askRepair is the reorder buffer's ask: it collects the sequences for
// sendRepairs (reorder goroutine).
func (e *Engine) askRepair(seq uint32) { e.repairSeqs = append(e.repairSeqs, seq) }

// sendRepairs sends what askRepair collected, RepairMax sequences a
// message, on the up path with the least RTT (reorder goroutine).
func (e *Engine) sendRepairs() {
	if len(e.repairSeqs) == 0 {
		return
	}
	seqs := e.repairSeqs
	e.repairSeqs = e.repairSeqs[:0]
	q := e.secondPath(-1)
	if q < 0 || e.peerEpoch.Load() == 0 {
		return // no path to ask on, or a peer that sends no epochs (and reads no repair)
	}
	e.sendRepair(e.paths[q], seqs)
	// Once more on the next best path: a request lost on a lossy path
	// would cost the hole its whole wait. The sender's resend ring answers
	// each sequence once (the second finds it already sent).
	if r := e.secondPath(q); r >= 0 {
		e.sendRepair(e.paths[r], seqs)
	}
	e.Stats.RepairAsked.Add(uint64(len(seqs)))
}

// sendRepair sends repair messages for seqs on p.
func (e *Engine) sendRepair(p *enginePath, seqs []uint32) {
	for len(seqs) > 0 {
		n := min(len(seqs), header.RepairMax)
		e.repairMsgs++
		f := header.RepairFields{ControlFields: e.controlFields(p, header.ControlRepair), Seqs: seqs[:n]}
		f.ProbeSeq, f.Timestamp = e.repairMsgs, e.now().UnixNano()
		l := header.EncodeRepairPacket(e.repairScratch[encap.Headroom:], p.localAs4(), p.remote, f)
		if e.repairOne[0] = e.frameControl(e.repairScratch, l); e.repairOne[0] != nil {
			if _, err := p.Uplink.Send(e.repairOne[:]); err != nil {
				p.txErrors.Add(1)
			}
		}
		seqs = seqs[n:]
	}
}

// repairOut is a receive loop's room for the packets a repair message asks
// for: copies, since the resend rings go on taking packets.
type repairOut struct {
	arena []byte
	pkts  [][]byte
	from  []int // the path that carried each
	to    []int // the path it goes on again (repairPath), -1: none up
}

func newRepairOut() *repairOut {
	return &repairOut{arena: make([]byte, 0, header.RepairMax*(maxRepairPacket)), pkts: make([][]byte, 0, header.RepairMax),
		from: make([]int, 0, header.RepairMax), to: make([]int, 0, header.RepairMax)}
}

// maxRepairPacket bounds a packet the repair copies: a path MTU's worth of
// tunnel packet (a TUN packet larger than that never fits a path).
const maxRepairPacket = 9216

// onRepair sends again the packets of seqs that the paths' resend rings
// still hold, each on repairPath of the one that lost it, once however
// often it is asked for. Sequences no ring holds any more are counted (RepairMissed).
func (e *Engine) onRepair(seqs []uint32, out *repairOut) {
	out.arena, out.pkts, out.from, out.to = out.arena[:0], out.pkts[:0], out.from[:0], out.to[:0]
	for _, seq := range seqs {
		kept := false
		for _, p := range e.paths {
			p.estMu.Lock()
			var b []byte
			if p.tx.keep != nil {
				b, kept = p.tx.keep.takeForRepair(seq)
			}
			if b != nil && len(b) <= maxRepairPacket && len(out.arena)+len(b) <= cap(out.arena) {
				out.arena = append(out.arena, b...)
				out.pkts = append(out.pkts, out.arena[len(out.arena)-len(b):])
				out.from = append(out.from, p.idx)
				out.to = append(out.to, e.repairPath(p.idx))
			}
			p.estMu.Unlock()
			if kept {
				break
			}
		}
		if !kept {
			e.Stats.RepairMissed.Add(1)
		}
	}
	// One send for each run of packets that go the same way.
	for i := 0; i < len(out.pkts); {
		q := out.to[i]
		j := i + 1
		for j < len(out.pkts) && out.to[j] == q {
			j++
		}
		for _, from := range out.from[i:j] {
			if q < 0 {
				e.Stats.RepairMissed.Add(1)
				continue
			}
			e.paths[from].repaired.Add(1)
			e.Stats.Repaired.Add(1)
		}
		if q >= 0 {
			e.sendData(e.paths[q], out.pkts[i:j], nil, nil, 0)
		}
		i = j
	}
}

// repairPath is where a packet that path from lost goes again: the up path
// with the least RTT, but another than from if one's RTT is within twice
// from's or 10 ms more (a lossy path may lose the repair too, and the
// receiver asks once; a much slower one would bring it after its wait:
// fibre's losses re-sent over LTE arrived too late for any to go in
// order); -1 if none is up.
func (e *Engine) repairPath(from int) int {
	best := e.secondPath(-1)
	if best != from {
		return best
	}
	r := e.paths[from].rttNs.Load()
	if q := e.secondPath(from); q >= 0 && e.paths[q].rttNs.Load() <= max(2*r, r+int64(repairNear)) {
		return q
	}
	return from
}

// repairNear is how much slower than the path that lost a packet another
// may be and still be preferred for its repair.
const repairNear = 10 * time.Millisecond
