// Package lb holds the director's per-connection real-server schedulers,
// IPVS's rr wrr lc wlc sed nq sh dh and mh (Maglev), on the counts that
// the connection table keeps in each Dest.
package lb

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Dest is a real server as a connection scheduler sees it. The director
// keeps Active and Inactive up to date from its connection table.
type Dest struct {
	Name     string // stable identity (address:port) for hashing schedulers
	Weight   int    // 0: no new connections
	Up       bool   // passes its health checks
	Active   int64  // established connections
	Inactive int64  // other connections (SYN, FIN, TIME_WAIT, UDP)
}

func (d *Dest) usable() bool { return d.Up && d.Weight > 0 }

// overhead is IPVS's connection load: active connections weigh 256 times
// an inactive one.
func (d *Dest) overhead() int64 { return d.Active*256 + d.Inactive }

// Conn is what a connection scheduler may look at in a new connection.
type Conn struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            uint8
}

// Scheduler picks the real server for a new connection, as IPVS's
// schedulers do. Pick returns an index into the dests it was given, or -1.
// Reset tells it the set, weights or health changed. Not safe for
// concurrent use: the director calls it under its service's lock.
type Scheduler interface {
	Pick(c Conn) int
	Reset(dests []*Dest)
}

// Names lists the names New accepts, as ipvsadm
// spells them.
var Names = []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh"}

// New returns the named scheduler over dests.
func New(name string, dests []*Dest) (Scheduler, error) {
	var s Scheduler
	switch name {
	case "rr":
		s = &serverRR{}
	case "wrr":
		s = &serverWRR{}
	case "lc":
		s = &leastConn{score: func(d *Dest) (int64, int64) { return d.overhead(), 1 }}
	case "wlc":
		s = &leastConn{score: func(d *Dest) (int64, int64) { return d.overhead(), int64(d.Weight) }}
	case "sed":
		s = &leastConn{score: func(d *Dest) (int64, int64) { return d.Active + 1, int64(d.Weight) }}
	case "nq":
		s = &leastConn{idleFirst: true, score: func(d *Dest) (int64, int64) { return d.Active + 1, int64(d.Weight) }}
	case "sh":
		s = &hashTable{key: func(c Conn) uint64 { return addrHash(c.Src) }}
	case "dh":
		s = &hashTable{key: func(c Conn) uint64 { return addrHash(c.Dst) }}
	case "mh":
		s = &Maglev{M: MaglevDefaultSize}
	default:
		return nil, fmt.Errorf("%q is not a scheduler (rr | wrr | lc | wlc | sed | nq | sh | dh | mh)", name)
	}
	s.Reset(dests)
	return s, nil
}

// serverRR is round-robin over the usable servers.
type serverRR struct {
	dests []*Dest
	next  int
}

func (r *serverRR) Reset(d []*Dest) { r.dests = d; r.next %= max(len(d), 1) }
func (r *serverRR) Pick(Conn) int {
	for k := 0; k < len(r.dests); k++ {
		i := r.next
		r.next = (r.next + 1) % len(r.dests)
		if r.dests[i].usable() {
			return i
		}
	}
	return -1
}

// serverWRR is smooth weighted round-robin: every pick adds each server's
// weight to its credit and takes the largest, which pays the total back.
// Over any run, picks follow the weights, and servers interleave.
type serverWRR struct {
	dests  []*Dest
	credit []int64
}

func (w *serverWRR) Reset(d []*Dest) { w.dests = d; w.credit = make([]int64, len(d)) }
func (w *serverWRR) Pick(Conn) int {
	best, total := -1, int64(0)
	for i, d := range w.dests {
		if !d.usable() {
			continue
		}
		w.credit[i] += int64(d.Weight)
		total += int64(d.Weight)
		if best < 0 || w.credit[i] > w.credit[best] {
			best = i
		}
	}
	if best >= 0 {
		w.credit[best] -= total
	}
	return best
}

// leastConn covers lc, wlc, sed and nq: the usable server with the least
// score num/den (compared by cross-multiplying, as IPVS does); nq first
// takes any server with no active connection.
type leastConn struct {
	dests     []*Dest
	score     func(*Dest) (num, den int64)
	idleFirst bool
}

func (l *leastConn) Reset(d []*Dest) { l.dests = d }
func (l *leastConn) Pick(Conn) int {
	best := -1
	var bn, bd int64
	for i, d := range l.dests {
		if !d.usable() {
			continue
		}
		if l.idleFirst && d.Active == 0 {
			return i
		}
		n, dd := l.score(d)
		if best < 0 || n*bd < bn*dd {
			best, bn, bd = i, n, dd
		}
	}
	return best
}

// hashTable covers sh and dh: 256 buckets dealt to the servers in
// proportion to their weights (as IPVS's sh/dh tables); a connection takes
// its bucket's server, or the next usable bucket's if that one is not.
type hashTable struct {
	dests   []*Dest
	buckets [256]int
	key     func(Conn) uint64
}

func (h *hashTable) Reset(d []*Dest) {
	h.dests = d
	var idx []int
	for i, x := range d {
		for k := 0; k < x.Weight; k++ {
			idx = append(idx, i)
		}
	}
	for b := range h.buckets {
		h.buckets[b] = -1
		if len(idx) > 0 {
			h.buckets[b] = idx[b%len(idx)]
		}
	}
}

func (h *hashTable) Pick(c Conn) int {
	b := int(h.key(c) % 256)
	for k := 0; k < 256; k++ {
		if i := h.buckets[(b+k)%256]; i >= 0 && h.dests[i].usable() {
			return i
		}
	}
	return -1
}

// MaglevDefaultSize is the lookup table size (a prime), as IPVS's mh.
const MaglevDefaultSize = 65537

// Maglev is consistent hashing (Eisenbud et al., NSDI 2016) with weights:
// each usable server fills the lookup table from its own permutation, as
// many entries per round as its weight (reduced by the weights' gcd). A
// connection takes table[hash(source) % M]. Removing one of N servers moves
// little more than its own 1/N of the connections.
type Maglev struct {
	M     int // a prime; MaglevDefaultSize if 0
	dests []*Dest
	table []int32
}

func (m *Maglev) Reset(d []*Dest) {
	if m.M == 0 {
		m.M = MaglevDefaultSize
	}
	m.dests = d
	m.table = make([]int32, m.M)
	for i := range m.table {
		m.table[i] = -1
	}
	var live []int
	g := 0
	for i, x := range d {
		if x.usable() {
			live = append(live, i)
			g = gcd(g, x.Weight)
		}
	}
	if len(live) == 0 {
		return
	}
	M := uint64(m.M)
	offset := make([]uint64, len(live))
	skip := make([]uint64, len(live))
	next := make([]uint64, len(live))
	for k, i := range live {
		h := fnv64(d[i].Name)
		offset[k] = h % M
		skip[k] = header.Mix64(h)%(M-1) + 1
	}
	filled := 0
	for filled < m.M {
		for k, i := range live {
			for turn := 0; turn < d[i].Weight/g && filled < m.M; turn++ {
				for {
					c := (offset[k] + next[k]*skip[k]) % M
					next[k]++
					if m.table[c] < 0 {
						m.table[c] = int32(i)
						filled++
						break
					}
				}
			}
		}
	}
}

func (m *Maglev) Pick(c Conn) int {
	if len(m.table) == 0 {
		return -1
	}
	i := int(m.table[addrHash(c.Src)%uint64(len(m.table))])
	if i >= 0 && !m.dests[i].usable() {
		return -1 // health changed since the table was built: Reset it
	}
	return i
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func fnv64(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return h
}

func addrHash(a netip.Addr) uint64 {
	b := a.As16()
	return header.Mix64(binary.BigEndian.Uint64(b[:8]) ^ header.Mix64(binary.BigEndian.Uint64(b[8:])))
}
