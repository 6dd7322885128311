// Package emulator emulates WAN links in user space: frames are carried
// between two interfaces with rate, delay, jitter and loss, set per
// direction. The kernel here has no sch_netem; this stands in for it.
package emulator

import (
	"math"
	"math/rand/v2"
	"time"
)

// Params describe one direction of a link. Zero values mean "none".
type Params struct {
	RateBps float64       // bits per second; 0 = unlimited
	Delay   time.Duration // one-way propagation delay
	Jitter  time.Duration // uniform ±Jitter added to the delay
	Loss    float64       // random loss probability, 0..1
	GE      *GilbertElliott
	Queue   time.Duration // the most a frame may wait for the rate (tail drop); 0: 50ms
	Reorder bool          // let jitter reorder frames (default: a link keeps order)

	// Schedule, if set, changes RateBps, Delay and Loss over time from the
	// shaper's start (see Schedule).
	Schedule *Schedule
	// Trace, if set, replaces the rate: frames leave at the trace's
	// delivery opportunities, one for each TraceMTU bytes or part of them
	// (a frame never shares one), with the same Queue limit. RateBps then
	// only describes the link (the profile sets it to the trace's mean).
	Trace *Trace
}

// GilbertElliott is bursty loss: a good and a bad state, with a chance to
// move to bad (P) and back to good (R) at every frame, and a loss
// probability in each state.
type GilbertElliott struct {
	P, R     float64 // good→bad, bad→good transition probabilities
	LossGood float64 // loss in the good state (1−k)
	LossBad  float64 // loss in the bad state (1−h)
}

// MeanLoss is the long-run loss rate of the model.
func (g GilbertElliott) MeanLoss() float64 {
	if g.P+g.R == 0 {
		return g.LossGood
	}
	bad := g.P / (g.P + g.R)
	return (1-bad)*g.LossGood + bad*g.LossBad
}

// Drop reasons.
type Verdict uint8

const (
	Pass Verdict = iota
	DropLoss
	DropQueue
)

// Shaper decides, for each frame of one direction, whether it is dropped
// and when it leaves. It is pure: time and randomness come from outside.
type Shaper struct {
	p          Params
	rng        *rand.Rand
	start      time.Time // time 0 of the schedule and the trace
	txFree     time.Time // when the emulated transmitter is free again
	lastDepart time.Time
	bad        bool // Gilbert-Elliott state

	// The schedule's step in force over [segFrom, segUntil): its values.
	offs              []time.Duration // steps' offsets from the start
	segFrom, segUntil time.Duration
	rate              float64
	delay             time.Duration
	loss              float64

	nextOpp int64 // the trace's first unused delivery opportunity
}

// NewShaper returns a shaper for p with the given random source, whose
// schedule and trace start at the first frame.
func NewShaper(p Params, rng *rand.Rand) *Shaper { return NewShaperAt(p, rng, time.Time{}) }

// NewShaperAt returns a shaper whose schedule and trace start at start
// (zero: at the first frame).
func NewShaperAt(p Params, rng *rand.Rand, start time.Time) *Shaper {
	if p.Queue == 0 {
		p.Queue = 50 * time.Millisecond
	}
	s := &Shaper{p: p, rng: rng, start: start, rate: p.RateBps, delay: p.Delay, loss: p.Loss}
	s.segFrom, s.segUntil = math.MinInt64, math.MaxInt64
	if sc := p.Schedule; sc != nil && len(sc.Steps) > 0 {
		var o time.Duration
		for _, st := range sc.Steps {
			o += st.After
			s.offs = append(s.offs, o)
		}
		s.segFrom, s.segUntil = 0, 0 // computed at the first frame
	}
	return s
}

// Restart moves the schedule's and the trace's time 0 to start, keeping
// the frames already queued (a trace's opportunities before their
// departures stay used).
func (s *Shaper) Restart(start time.Time) {
	s.start = start
	s.segFrom, s.segUntil = 0, 0
	if s.p.Schedule == nil || len(s.offs) == 0 {
		s.segFrom, s.segUntil = math.MinInt64, math.MaxInt64
	}
	s.nextOpp = 0
	if tr := s.p.Trace; tr != nil && s.txFree.After(start) {
		s.nextOpp = tr.firstAt(s.txFree.Sub(start)) // not before the queue drains
	}
}

// InForce returns the params in force at now: the base ones with the
// schedule's step at now applied.
func (s *Shaper) InForce(now time.Time) Params {
	if s.start.IsZero() {
		s.start = now
	}
	s.update(now)
	p := s.p
	p.RateBps, p.Delay, p.Loss = s.rate, s.delay, s.loss
	return p
}

// update sets rate, delay and loss to the step in force at t.
func (s *Shaper) update(t time.Time) {
	d := t.Sub(s.start)
	if d >= s.segFrom && d < s.segUntil {
		return
	}
	sc := s.p.Schedule
	i, until := sc.at(s.offs, d)
	if i < 0 {
		s.rate, s.delay, s.loss = s.p.RateBps, s.p.Delay, s.p.Loss
		s.segFrom = math.MinInt64
	} else {
		st := sc.Steps[i]
		s.rate, s.delay, s.loss = st.RateBps, st.Delay, st.Loss
		s.segFrom = d // a lower bound of the step's start will do
	}
	s.segUntil = until
}

// Admit takes a frame of size bytes arriving at now and returns when it
// must be sent on, or why it is dropped.
//
// On a scheduled link, the loss in force when the frame arrives applies,
// the rate in force when its serialisation begins (for all of it), and the
// delay in force when it has been serialised.
func (s *Shaper) Admit(now time.Time, size int) (time.Time, Verdict) {
	if s.start.IsZero() {
		s.start = now
	}
	s.update(now)
	if s.lost() {
		return time.Time{}, DropLoss
	}
	start := now
	if tr := s.p.Trace; tr != nil {
		if k := tr.firstAt(now.Sub(s.start)); k > s.nextOpp {
			s.nextOpp = k // the link idled: opportunities passed unused
		}
		first := s.start.Add(tr.oppAt(s.nextOpp))
		if first.Sub(now) > s.p.Queue {
			return time.Time{}, DropQueue
		}
		s.nextOpp += int64(max(1, (size+TraceMTU-1)/TraceMTU))
		start = s.start.Add(tr.oppAt(s.nextOpp - 1)) // its last byte's
		s.txFree = start
	} else {
		if s.txFree.After(start) {
			if s.txFree.Sub(now) > s.p.Queue {
				return time.Time{}, DropQueue
			}
			start = s.txFree
			s.update(start)
		}
		if s.rate > 0 {
			s.txFree = start.Add(time.Duration(float64(size*8) / s.rate * 1e9))
			start = s.txFree // the frame is on the far side once serialised
		}
	}
	s.update(start)
	depart := start.Add(s.delay)
	if s.p.Jitter > 0 {
		depart = depart.Add(time.Duration((s.rng.Float64()*2 - 1) * float64(s.p.Jitter)))
	}
	if !s.p.Reorder && depart.Before(s.lastDepart) {
		depart = s.lastDepart
	}
	s.lastDepart = depart
	return depart, Pass
}

func (s *Shaper) lost() bool {
	if g := s.p.GE; g != nil {
		if s.bad {
			if s.rng.Float64() < g.R {
				s.bad = false
			}
		} else if s.rng.Float64() < g.P {
			s.bad = true
		}
		loss := g.LossGood
		if s.bad {
			loss = g.LossBad
		}
		if s.rng.Float64() < loss {
			return true
		}
	}
	return s.loss > 0 && s.rng.Float64() < s.loss
}
