// Package emulator emulates WAN links in user space: frames are carried
// between two interfaces with rate, delay, jitter and loss, set per
// direction. The kernel here has no sch_netem; this stands in for it.
package emulator

import (
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
	txFree     time.Time // when the emulated transmitter is free again
	lastDepart time.Time
	bad        bool // Gilbert-Elliott state
}

// NewShaper returns a shaper for p with the given random source.
func NewShaper(p Params, rng *rand.Rand) *Shaper {
	if p.Queue == 0 {
		p.Queue = 50 * time.Millisecond
	}
	return &Shaper{p: p, rng: rng}
}

// Admit takes a frame of size bytes arriving at now and returns when it
// must be sent on, or why it is dropped.
func (s *Shaper) Admit(now time.Time, size int) (time.Time, Verdict) {
	if s.lost() {
		return time.Time{}, DropLoss
	}
	start := now
	if s.p.RateBps > 0 {
		if s.txFree.After(start) {
			if s.txFree.Sub(now) > s.p.Queue {
				return time.Time{}, DropQueue
			}
			start = s.txFree
		}
		s.txFree = start.Add(time.Duration(float64(size*8) / s.p.RateBps * 1e9))
		start = s.txFree // the frame is on the far side once serialised
	}
	depart := start.Add(s.p.Delay)
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
	return s.p.Loss > 0 && s.rng.Float64() < s.p.Loss
}
