package emulator

import (
	"errors"
	"fmt"
	"time"
)

// Step is one change of a time-varying link: After the previous step took
// effect (the first step: after the shaper's start), the link's rate, delay
// and loss become these. A step sets all three; the profile fills the ones
// it does not name from the link's base shape.
type Step struct {
	After   time.Duration
	RateBps float64 // 0 = unlimited (ignored on a trace link)
	Delay   time.Duration
	Loss    float64
}

// Schedule is a time-varying link. Before the first step the base Params
// are in force. With Repeat, the steps then cycle for ever: after the last
// step, the first one's After elapses and the first step applies again, so
// the cycle is the sum of the steps' After. Without it, the last step stays.
type Schedule struct {
	Steps  []Step
	Repeat bool
}

// Check reports a schedule that cannot run.
func (s *Schedule) Check() error {
	if len(s.Steps) == 0 {
		return errors.New("a schedule needs at least one step")
	}
	for i, st := range s.Steps {
		if st.After <= 0 {
			return fmt.Errorf("step %d: after must be > 0", i)
		}
	}
	return nil
}

// Period is the length of one cycle: the sum of the steps' After.
func (s *Schedule) Period() time.Duration {
	var p time.Duration
	for _, st := range s.Steps {
		p += st.After
	}
	return p
}

// at returns the step in force d after the start (-1: the base params) and
// the time after the start at which the next change happens. offs are the
// steps' offsets from the start (the running sums of After).
func (s *Schedule) at(offs []time.Duration, d time.Duration) (int, time.Duration) {
	const never = time.Duration(1<<63 - 1)
	n := len(offs)
	if n == 0 || d < offs[0] {
		if n == 0 {
			return -1, never
		}
		return -1, offs[0]
	}
	period := offs[n-1]
	var base time.Duration // the cycle's shift
	// A period of 0 (which Check refuses) does not cycle.
	if s.Repeat && period > 0 && d >= period {
		c := (d - offs[0]) / period
		base = c * period
		d -= base
	}
	i := 0
	for i+1 < n && offs[i+1] <= d {
		i++
	}
	switch {
	case i+1 < n:
		return i, base + offs[i+1]
	case s.Repeat:
		return i, base + period + offs[0]
	}
	return i, never
}

// MeanRateBps is the link's mean rate: a trace's, or a repeating schedule's
// over one cycle (each step weighted by how long it holds); 0 if any part
// of it is unlimited.
func (p Params) MeanRateBps() float64 {
	if p.Trace != nil {
		return p.Trace.MeanBps()
	}
	s := p.Schedule
	if s == nil || len(s.Steps) == 0 {
		return p.RateBps
	}
	if !s.Repeat {
		return s.Steps[len(s.Steps)-1].RateBps
	}
	var bits float64
	for i, st := range s.Steps {
		if st.RateBps == 0 {
			return 0
		}
		hold := s.Steps[(i+1)%len(s.Steps)].After
		bits += st.RateBps * hold.Seconds()
	}
	return bits / s.Period().Seconds()
}
