package path

import (
	"math"

	"github.com/tunbond/tunbond/tunnel/header"
)

// FlowHash keeps every flow (inner 5-tuple) on one path, so a flow is never
// reordered: the right scheduler for IPIP bonds, which cannot reorder. It
// uses weighted rendezvous hashing, so when a path goes down only the flows
// it carried move, and they come back when it recovers.
type FlowHash struct {
	p   *Paths
	key func([]byte) uint64 // header.FlowKey, or header.FrameFlowKey (ForFrames)
}

func NewFlowHash(p *Paths) *FlowHash { return &FlowHash{p: p, key: header.FlowKey} }

// ForFrames makes a scheduler that keeps flows together (flowhash) find
// them in Ethernet frames (mode: l2): the inner IP 5-tuple, under VLAN tags
// too, else the MAC pair. The others look at no more than a packet's
// length.
func ForFrames(s Scheduler) Scheduler {
	if f, ok := s.(*FlowHash); ok {
		f.key = header.FrameFlowKey
	}
	return s
}

func (f *FlowHash) Pick(pkt []byte) int {
	h := f.key(pkt)
	best, bestScore := -1, 0.0
	for i := 0; i < f.p.Len(); i++ {
		if !f.p.usable(i) {
			continue
		}
		// u in (0,1) from the flow and path; score = -w/ln(u) is the
		// weighted rendezvous score: a path wins in proportion to its weight.
		u := (float64(header.Mix64(h^uint64(i+1)*0x9e3779b97f4a7c15)>>11) + 0.5) / (1 << 53)
		s := -float64(f.p.Weight(i)) / math.Log(u)
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
