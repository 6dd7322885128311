package path

import "time"

// EarliestArrival is the delay-aware scheduler: each packet goes to the
// path on which it would arrive first. A path is modelled as a queue drained
// at its rate (the weight, in Mbit/s) followed by its one-way delay (from
// the keepalives' RTT, without queueing). With little traffic everything
// takes the fastest path and nothing is reordered; as its queue grows, a
// slower path takes a packet once the packet would arrive there no later,
// so packets from different paths arrive nearly in order and the transport
// sees a steady RTT. A modelled queue never drains before the queue the
// path's keepalives last met would (measured at the reply, q later), so
// rates set too high (framing overheads, a shared LTE cell) are corrected by
// what the path shows.
type EarliestArrival struct {
	p    *Paths
	now  func() time.Time
	busy []time.Time // when each path's modelled queue drains
}

// FrameOverhead is what a packet costs on an uplink beyond the inner packet:
// outer IPv4 (20), GRE with key and sequence (12), an Ethernet header (14).
const FrameOverhead = 46

// NewEarliestArrival returns the scheduler; now is its clock.
func NewEarliestArrival(p *Paths, now func() time.Time) *EarliestArrival {
	return &EarliestArrival{p: p, now: now, busy: make([]time.Time, p.Len())}
}

func (e *EarliestArrival) Pick(pkt []byte) int {
	now := e.now()
	best := -1
	var bestArrive, bestDone time.Time
	bits := float64(len(pkt)+FrameOverhead) * 8
	for i := range e.busy {
		if !e.p.usable(i) {
			continue
		}
		start := e.busy[i]
		if q := e.p.QueueUntil(i); start.Before(q) {
			start = q
		}
		if start.Before(now) {
			start = now
		}
		done := start.Add(time.Duration(bits / float64(e.p.Weight(i)) * 1e3)) // weight in Mbit/s: bits/(Mbit/s) = µs
		arrive := done.Add(e.p.Delay(i))
		if best < 0 || arrive.Before(bestArrive) {
			best, bestArrive, bestDone = i, arrive, done
		}
	}
	if best >= 0 {
		e.busy[best] = bestDone
	}
	return best
}
