// Package path holds the bond's per-packet path schedulers (rr, wrr by
// bytes, flowhash, delay), the path state they share with the engine
// (up, weight, delay: atomics, so the control API and health checks change
// them while the TX goroutine picks), and what the sender learns of each
// path from the receiver's feedback (SendLog, Estimate).
// Package scheduler chooses where traffic goes: per packet among the
// uplinks of a bond (Scheduler), and per connection among the real
// servers of a virtual service (director mode).
package path

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Paths is the live state of a bond's uplinks shared between the packet
// scheduler (one reader goroutine) and the health checker and control
// socket (writers): whether each path is up and its weight.
type Paths struct {
	up     []atomic.Bool
	weight []atomic.Uint32
	delay  []atomic.Int64 // one-way delay estimate, ns
	queue  []atomic.Int64 // unix ns until which the path's queue was measured busy
	gen    atomic.Uint64  // bumped on every change

	// learned from feedback (Learned), and the adaptive scheduler's verdicts
	rate      []atomic.Uint64 // float64 bits, inner bytes/s
	owd       []atomic.Int64
	owdKnown  []atomic.Bool
	loss      []atomic.Uint32
	feedback  []atomic.Int64
	stalled   []atomic.Bool
	ceiling   []atomic.Uint64 // float64 bits, inner bytes/s
	excluded  []atomic.Uint32 // Exclusion
	idle      []atomic.Int64  // unix ns the scheduler last found the path's queue empty
	qdelay    []atomic.Int64
	delivered []atomic.Uint64
	solo      atomic.Int32
	repaired  atomic.Bool // the bond repairs losses (SetRepaired)
}

// SetRepaired says whether the bond sends again what the paths lose
// (repair): then a path's random loss costs the inner flows latency, not
// their rate, and a path counts as lossy only from RepairedLossyPPM.
func (p *Paths) SetRepaired(on bool) { p.repaired.Store(on) }

// NewPaths returns n paths, all up, with the given weights (nil: all 1).
func NewPaths(weights []uint32) *Paths {
	n := len(weights)
	p := &Paths{up: make([]atomic.Bool, n), weight: make([]atomic.Uint32, n),
		delay: make([]atomic.Int64, n), queue: make([]atomic.Int64, n),
		rate: make([]atomic.Uint64, n), owd: make([]atomic.Int64, n), owdKnown: make([]atomic.Bool, n),
		loss: make([]atomic.Uint32, n), feedback: make([]atomic.Int64, n), stalled: make([]atomic.Bool, n),
		ceiling: make([]atomic.Uint64, n), excluded: make([]atomic.Uint32, n), idle: make([]atomic.Int64, n), qdelay: make([]atomic.Int64, n), delivered: make([]atomic.Uint64, n)}
	p.solo.Store(-1)
	for i, w := range weights {
		p.up[i].Store(true)
		p.weight[i].Store(w)
	}
	return p
}

func (p *Paths) Len() int            { return len(p.up) }
func (p *Paths) Up(i int) bool       { return p.up[i].Load() }
func (p *Paths) Weight(i int) uint32 { return p.weight[i].Load() }
func (p *Paths) Generation() uint64  { return p.gen.Load() }
func (p *Paths) usable(i int) bool {
	return p.up[i].Load() && p.weight[i].Load() > 0 && !p.stalled[i].Load()
}
func (p *Paths) SetUp(i int, up bool) { p.up[i].Store(up); p.gen.Add(1) }

// SetDelay records a path's one-way delay (without queueing), as measured.
func (p *Paths) SetDelay(i int, d time.Duration) { p.delay[i].Store(int64(d)) }

// SetQueueUntil records that the path's queue, as its keepalives measured
// it (RTT above the least RTT, at the time of the reply), drains no sooner
// than t: feedback for schedulers that model queues.
func (p *Paths) SetQueueUntil(i int, t time.Time) { p.queue[i].Store(t.UnixNano()) }

// QueueUntil is when the path's measured queue drains, at the earliest.
func (p *Paths) QueueUntil(i int) time.Time { return time.Unix(0, p.queue[i].Load()) }

// Delay is the path's one-way delay estimate.
func (p *Paths) Delay(i int) time.Duration { return time.Duration(p.delay[i].Load()) }

// SetWeight changes a path's weight at run time; 0 takes it out of use.
func (p *Paths) SetWeight(i int, w uint32) { p.weight[i].Store(w); p.gen.Add(1) }

// Scheduler picks the uplink for each packet. Pick is called from one
// goroutine; it returns -1 when no path is usable.
type Scheduler interface {
	Pick(pkt []byte) int
}

// New returns the scheduler of that name (Names), on the system clock.
func New(name string, p *Paths) (Scheduler, error) { return NewClocked(name, p, time.Now) }

// NewClocked returns the scheduler of that name on the clock now.
func NewClocked(name string, p *Paths, now func() time.Time) (Scheduler, error) {
	switch name {
	case "adaptive":
		return NewAdaptive(p, now), nil
	case "rr":
		return NewRoundRobin(p), nil
	case "wrr":
		return NewWeightedBytes(p), nil
	case "flowhash":
		return NewFlowHash(p), nil
	case "delay":
		return NewEarliestArrival(p, now), nil
	}
	return nil, fmt.Errorf("%q is not a path scheduler (adaptive | rr | wrr | flowhash | delay)", name)
}

// Names lists the names New accepts.
var Names = []string{"adaptive", "rr", "wrr", "flowhash", "delay"}

// RoundRobin sends packet after packet to the next usable path.
type RoundRobin struct {
	p    *Paths
	next int
}

func NewRoundRobin(p *Paths) *RoundRobin { return &RoundRobin{p: p} }

func (r *RoundRobin) Pick([]byte) int {
	n := r.p.Len()
	for k := 0; k < n; k++ {
		i := r.next
		r.next++
		if r.next == n {
			r.next = 0
		}
		if r.p.usable(i) {
			return i
		}
	}
	return -1
}

// WeightedBytes is smooth weighted round-robin by bytes: each path has a
// virtual time that grows by len/weight for every packet it carries, and
// the next packet goes to the usable path with the smallest one. Over any
// stretch of traffic each path carries bytes in proportion to its weight,
// and the paths interleave finely (no bursts of one path).
type WeightedBytes struct {
	p   *Paths
	vt  []float64
	gen uint64
	was []bool // usable at the last generation seen
}

func NewWeightedBytes(p *Paths) *WeightedBytes {
	w := &WeightedBytes{p: p, vt: make([]float64, p.Len()), was: make([]bool, p.Len()), gen: ^uint64(0)}
	return w
}

func (w *WeightedBytes) Pick(pkt []byte) int {
	if g := w.p.Generation(); g != w.gen {
		w.refresh(g)
	}
	best := -1
	for i := range w.vt {
		if w.was[i] && (best < 0 || w.vt[i] < w.vt[best]) {
			best = i
		}
	}
	if best >= 0 {
		w.vt[best] += float64(len(pkt)+1) / float64(w.p.Weight(best))
	}
	return best
}

// refresh brings a path that (re)joins up to the others' virtual time, so it
// does not take a burst to "catch up" on time it was away.
func (w *WeightedBytes) refresh(g uint64) {
	w.gen = g
	floor, any := 0.0, false
	for i := range w.vt {
		if w.was[i] && w.p.usable(i) && (!any || w.vt[i] < floor) {
			floor, any = w.vt[i], true
		}
	}
	for i := range w.vt {
		u := w.p.usable(i)
		if u && !w.was[i] && w.vt[i] < floor {
			w.vt[i] = floor
		}
		w.was[i] = u
	}
}
