package scheduler

import (
	"encoding/binary"
	"math"
)

// FlowHash keeps every flow (inner 5-tuple) on one path, so a flow is never
// reordered: the right scheduler for IPIP bonds, which cannot reorder. It
// uses weighted rendezvous hashing, so when a path goes down only the flows
// it carried move, and they come back when it recovers.
type FlowHash struct {
	p *Paths
}

func NewFlowHash(p *Paths) *FlowHash { return &FlowHash{p: p} }

func (f *FlowHash) Pick(pkt []byte) int {
	h := FlowKey(pkt)
	best, bestScore := -1, 0.0
	for i := 0; i < f.p.Len(); i++ {
		if !f.p.usable(i) {
			continue
		}
		// u in (0,1) from the flow and path; score = -w/ln(u) is the
		// weighted rendezvous score: a path wins in proportion to its weight.
		u := (float64(mix64(h^uint64(i+1)*0x9e3779b97f4a7c15)>>11) + 0.5) / (1 << 53)
		s := -float64(f.p.Weight(i)) / math.Log(u)
		if best < 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}

// FlowKey hashes an IP packet's flow: addresses, protocol and, for TCP, UDP,
// SCTP and UDP-Lite on an unfragmented packet, the ports.
func FlowKey(pkt []byte) uint64 {
	if len(pkt) < 1 {
		return 0
	}
	var h uint64 = 0xcbf29ce484222325
	var proto uint8
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return 0
		}
		ihl := int(pkt[0]&0x0f) * 4
		proto = pkt[9]
		h = mix64(h ^ uint64(binary.BigEndian.Uint64(pkt[12:20])))
		fragmented := binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0
		if !fragmented && ihl >= 20 && len(pkt) >= ihl+4 {
			l4 = pkt[ihl:]
		}
	case 6:
		if len(pkt) < 40 {
			return 0
		}
		proto = pkt[6]
		for o := 8; o < 40; o += 8 {
			h = mix64(h ^ binary.BigEndian.Uint64(pkt[o:]))
		}
		if len(pkt) >= 44 {
			l4 = pkt[40:]
		}
	default:
		return 0
	}
	h = mix64(h ^ uint64(proto))
	switch proto {
	case 6, 17, 132, 136:
		if l4 != nil {
			h = mix64(h ^ uint64(binary.BigEndian.Uint32(l4)))
		}
	}
	return h
}

// mix64 is the splitmix64 finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
