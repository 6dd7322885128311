package path

import (
	"math"
	"time"
)

// Learned is what the sender has learned of one path from the receiver's
// feedback (Estimate), as the engine publishes it to the scheduler.
type Learned struct {
	Rate      float64       // delivery rate, inner bytes/s (windowed max); 0: not known yet
	BaseOWD   time.Duration // least one-way delay, with the clocks' offset: only differences between paths mean anything
	Queue     time.Duration // the latest feedback's one-way queueing (its delay above BaseOWD)
	LossPPM   uint32        // smoothed packet loss, parts per million of packets sent
	Delivered uint64        // inner bytes the receiver counted on the path, as of the latest feedback
	Feedback  time.Time     // when the latest feedback was taken
}

// SetLearned publishes what feedback taught of path i (the engine calls it
// on each feedback, from the path's receive goroutine).
func (p *Paths) SetLearned(i int, l Learned) {
	p.rate[i].Store(math.Float64bits(l.Rate))
	p.owd[i].Store(int64(l.BaseOWD))
	p.owdKnown[i].Store(true)
	p.qdelay[i].Store(int64(l.Queue))
	p.loss[i].Store(l.LossPPM)
	p.delivered[i].Store(l.Delivered)
	p.feedback[i].Store(l.Feedback.UnixNano())
}

// Learned returns what was last published for path i; ok is false before
// the first feedback (or after ForgetLearned).
func (p *Paths) Learned(i int) (l Learned, ok bool) {
	if !p.owdKnown[i].Load() {
		return Learned{}, false
	}
	return Learned{Rate: math.Float64frombits(p.rate[i].Load()), BaseOWD: time.Duration(p.owd[i].Load()),
		Queue: time.Duration(p.qdelay[i].Load()), LossPPM: p.loss[i].Load(), Delivered: p.delivered[i].Load(),
		Feedback: time.Unix(0, p.feedback[i].Load())}, true
}

// ForgetLearned drops what was learned of path i (a new peer epoch: the
// receiver's counters start again).
func (p *Paths) ForgetLearned(i int) {
	p.owdKnown[i].Store(false)
	p.rate[i].Store(0)
	p.loss[i].Store(0)
	p.gen.Add(1)
}

// SetStalled takes path i out of the scheduler while its feedback has
// stopped under traffic (or puts it back); an up path whose feedback stops
// is not yet down for the keepalives.
func (p *Paths) SetStalled(i int, stalled bool) {
	if p.stalled[i].Swap(stalled) != stalled {
		p.gen.Add(1)
	}
}

// Stalled reports whether path i's feedback has stopped under traffic.
func (p *Paths) Stalled(i int) bool { return p.stalled[i].Load() }

// SetCeiling caps path i's rate (inner bytes/s) for the adaptive scheduler:
// a metered or capped link. 0: none.
func (p *Paths) SetCeiling(i int, bytesPerSecond float64) {
	p.ceiling[i].Store(math.Float64bits(bytesPerSecond))
}

// Ceiling is path i's cap in inner bytes/s, 0 if none.
func (p *Paths) Ceiling(i int) float64 { return math.Float64frombits(p.ceiling[i].Load()) }

// Exclusion says why the adaptive scheduler leaves a usable path out.
type Exclusion uint32

const (
	Included      Exclusion = iota
	ExcludedLossy           // it loses packets where another path does not: spreading onto it would cut the flows' rate
	ExcludedTiny            // it adds less than it costs: its rate is a sliver of the best path's
	numExclusions
)

func (x Exclusion) String() string {
	switch x {
	case ExcludedLossy:
		return "lossy"
	}
	return ""
}

// Excluded is why the adaptive scheduler leaves path i out, if it does.
func (p *Paths) Excluded(i int) Exclusion { return Exclusion(p.excluded[i].Load()) }

func (p *Paths) setExcluded(i int, x Exclusion) { p.excluded[i].Store(uint32(x)) }

// Solo is the one path the adaptive scheduler uses when it has left every
// other usable path out (the bond runs on the best link alone), or -1.
func (p *Paths) Solo() int { return int(p.solo.Load()) }

// markIdle records that the scheduler found path i's modelled queue empty
// at now: it was offered less than it could carry.
func (p *Paths) markIdle(i int, now int64) { p.idle[i].Store(now) }

// IdleAt is when the scheduler last found path i with room to spare (unix
// ns, 0: never): a rate sample over a stretch that includes it is
// application-limited.
func (p *Paths) IdleAt(i int) int64 { return p.idle[i].Load() }

// deliveredSum is what the receiver counted on every path, in inner bytes.
func (p *Paths) deliveredSum() uint64 {
	var n uint64
	for i := range p.delivered {
		n += p.delivered[i].Load()
	}
	return n
}
