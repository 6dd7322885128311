package path

import "time"

// Tuning of the adaptive scheduler. These are the values the tests and the
// lab run; there are no config keys for them.
const (
	// ProbeGain is how much faster than its learned delivery rate the model
	// drains a path that shows no queue (below QueueSignificant): such a
	// path is not the bottleneck, so what it delivered is not what it can,
	// and offering it twice that finds its rate in a few round trips, as
	// slow start does. A path that shows a queue is modelled at the rate it
	// delivers, its measured queue correcting the model's.
	ProbeGain = 2
	// QueueSignificant is the one-way queueing from which a path counts as
	// the bottleneck of what it is offered.
	QueueSignificant = 2 * time.Millisecond
	// ProbeFloor is the least rate a path that shows no queue is modelled
	// at (inner bytes/s, 10 Mbit/s): one that carries only the ACKs of the
	// other direction's flows delivers little, and modelling it at twice
	// that would spill ACKs onto slower paths as soon as they grow; 10
	// Mbit/s carries the ACKs of some 600 Mbit/s of data.
	ProbeFloor = 1.25e6
	// BootstrapRate is what a path is assumed to carry (inner bytes/s)
	// before any feedback and with no other path's rate to go by: 100 Mbit/s.
	BootstrapRate = 12.5e6
	// LossyPPM is the smoothed loss (parts per million) from which a path
	// counts as lossy, when another path loses under a quarter as much.
	LossyPPM = 2000
	// RepairedLossyPPM replaces LossyPPM when the bond repairs losses
	// (Paths.SetRepaired): the inner flows no longer see a path's random
	// loss, only the repairs' round trips, so a path is tried without only
	// when it loses so much that those hold much of the traffic (the lab's
	// lossy profile, 2% on one of two paths: 46 Mbit/s with the lossy
	// path tried out and left out, against 50 on the clean one alone and
	// ~90 with both, cubic).
	RepairedLossyPPM = 50000
	// refreshEvery is how often the scheduler reads the learned state
	// (atomics written by the receive goroutines) into its own.
	refreshEvery = time.Millisecond
)

// Adaptive is the default scheduler: earliest arrival over learned paths.
// Each packet goes to the path where it would reach the receiver first,
// // each path modelled as a queue drained at its learned delivery rate (×
// ProbeGain where it shows no queue; under its ceiling), followed by its
// base one-way delay relative to the fastest path; the queue the
// keepalives measure is a floor under the model's. So a flow
// that fits in the fastest path stays on it; only its excess spills onto
// slower paths, and then just so much that packets from every path arrive
// nearly together: the reorder buffer holds little and the inner flows see
// a steady RTT.
//
// A lossy path (LossyPPM, against a cleaner one) is left out where the bond
// delivers more without it, found by trial (TrialFor): its losses may cut
// the flows' rate below what the cleaner paths alone carry. When that
// leaves one path, the bond runs on the best link alone (Solo). A
// slow or small path needs no such rule: a packet goes there only when it
// would arrive there first.
type Adaptive struct {
	p   *Paths
	now func() time.Time

	busy        []int64 // ns: when each path's modelled queue drains
	rate        []float64
	rel         []int64 // ns: base one-way delay above the fastest path's
	in          []bool  // in use: usable and not excluded
	trials      []trial
	idleMarked  []int64
	verdicts    []Exclusion
	nextRefresh int64
	gen         uint64
}

// NewAdaptive returns the scheduler; now is its clock.
func NewAdaptive(p *Paths, now func() time.Time) *Adaptive {
	n := p.Len()
	return &Adaptive{p: p, now: now, busy: make([]int64, n), rate: make([]float64, n), rel: make([]int64, n),
		in: make([]bool, n), trials: make([]trial, n), idleMarked: make([]int64, n),
		verdicts: make([]Exclusion, 0, n),
		gen:      ^uint64(0)}
}

func (a *Adaptive) Pick(pkt []byte) int {
	now := a.now().UnixNano()
	if g := a.p.Generation(); now >= a.nextRefresh || g != a.gen {
		a.gen = g
		a.refresh(now)
	}
	best := -1
	var bestArrive, bestDone int64
	size := float64(len(pkt))
	for i, in := range a.in {
		if !in {
			continue
		}
		start := max(a.busy[i], now)
		done := start + int64(size*1e9/a.rate[i])
		if arrive := done + a.rel[i]; best < 0 || arrive < bestArrive {
			best, bestArrive, bestDone = i, arrive, done
		}
	}
	if best >= 0 {
		if a.busy[best] < now && now-a.idleMarked[best] > int64(time.Millisecond) {
			a.idleMarked[best] = now
			a.p.markIdle(best, now) // the path had room: its next rate sample is application-limited
		}
		a.busy[best] = bestDone
	}
	return best
}

// refresh reads the learned state and takes the exclusion verdicts.
func (a *Adaptive) refresh(now int64) {
	a.nextRefresh = now + int64(refreshEvery)
	n := len(a.in)
	// Delays: the learned one-way delays where every usable path has one
	// (the clocks' offset cancels in the differences), else half the
	// keepalives' least RTTs.
	usable, known := 0, 0
	var maxRate float64
	for i := 0; i < n; i++ {
		l, ok := a.p.Learned(i)
		if ok {
			maxRate = max(maxRate, l.Rate)
		}
		if a.in[i] = a.p.usable(i); a.in[i] {
			usable++
			if ok {
				known++
			}
		}
	}
	lo := int64(-1)
	for i := 0; i < n; i++ {
		if !a.in[i] {
			continue
		}
		l, ok := a.p.Learned(i)
		r := l.Rate
		if l.Queue < QueueSignificant || time.Duration(now-l.Feedback.UnixNano()) > 100*time.Millisecond {
			r = max(r*ProbeGain, ProbeFloor)
		}
		if !ok || l.Rate == 0 {
			r = BootstrapRate
			if maxRate > 0 {
				r = maxRate // optimistic: an untried path gets tried
			}
		}
		if c := a.p.Ceiling(i); c > 0 {
			r = min(r, c)
		}
		a.rate[i] = max(r, 1e3)
		if known == usable {
			a.rel[i] = int64(l.BaseOWD)
		} else {
			a.rel[i] = int64(a.p.Delay(i))
		}
		if lo < 0 || a.rel[i] < lo {
			lo = a.rel[i]
		}
		// The queue the keepalives last measured (RTT above the least, at
		// the reply) drains no sooner than the model says.
		a.busy[i] = max(a.busy[i], a.p.QueueUntil(i).UnixNano())
	}
	for i := 0; i < n; i++ {
		if a.in[i] {
			a.rel[i] -= lo
		}
	}
	a.exclude(now)
}

// A lossy path's fate is decided by trial, because whether spreading onto
// it pays depends on the inner flows' congestion control (cubic halves its
// window at every loss; BBR hardly notices random loss): the bond's
// delivery rate is measured for TrialFor with the path in use, then for
// TrialFor without it, and the better is kept for HoldFor, then tried again.
const (
	TrialFor = 2 * time.Second
	HoldFor  = 20 * time.Second
	// TrialMargin is how much better the bond must do without the path to
	// leave it out: a tie keeps it.
	TrialMargin = 1.05
)

type trialPhase uint8

const (
	trialNone   trialPhase = iota
	trialSpread            // measuring with the path in use
	trialSolo              // measuring without it
	heldIn                 // decided: in use until end
	heldOut                // decided: left out until end
)

type trial struct {
	phase      trialPhase
	end        int64
	bytes0     uint64  // the bond's delivered bytes when the phase began
	spreadRate float64 // bytes/s with the path in use
}

// exclude takes the lossy paths' trials a step, and works out Solo.
func (a *Adaptive) exclude(now int64) {
	n := len(a.in)
	verdicts := a.verdicts[:0]
	for i := 0; i < n; i++ {
		v := Included
		if a.in[i] {
			v = a.step(i, now)
		} else {
			a.trials[i] = trial{}
		}
		verdicts = append(verdicts, v)
	}
	solo, inUse, last := -1, 0, -1
	for i, v := range verdicts {
		a.p.setExcluded(i, v)
		if a.in[i] && v != Included {
			a.in[i] = false
		}
		if a.in[i] {
			inUse++
			last = i
		}
	}
	if inUse == 1 && n > 1 {
		solo = last
	}
	a.p.solo.Store(int32(solo))
}

// step advances usable path i's trial and returns its verdict.
func (a *Adaptive) step(i int, now int64) Exclusion {
	t := &a.trials[i]
	rate := func() float64 {
		d := a.p.deliveredSum() - t.bytes0
		if int64(d) < 0 {
			d = 0
		}
		return float64(d) * 1e9 / float64(TrialFor)
	}
	switch t.phase {
	case trialSpread:
		if now < t.end {
			return Included
		}
		t.spreadRate = rate()
		t.phase, t.end, t.bytes0 = trialSolo, now+int64(TrialFor), a.p.deliveredSum()
		return ExcludedLossy
	case trialSolo:
		if now < t.end {
			return ExcludedLossy
		}
		if solo := rate(); solo > t.spreadRate*TrialMargin {
			t.phase, t.end = heldOut, now+int64(HoldFor)
			return ExcludedLossy
		}
		t.phase, t.end = heldIn, now+int64(HoldFor)
		return Included
	case heldOut:
		if now < t.end {
			return ExcludedLossy
		}
	case heldIn:
		if now < t.end {
			return Included
		}
	}
	t.phase = trialNone
	if !a.lossy(i) {
		return Included
	}
	t.phase, t.end, t.bytes0 = trialSpread, now+int64(TrialFor), a.p.deliveredSum()
	return Included
}

// lossy reports whether usable path i loses LossyPPM or more where another
// usable path loses under a quarter as much.
func (a *Adaptive) lossy(i int) bool {
	l, _ := a.p.Learned(i)
	limit := uint32(LossyPPM)
	if a.p.repaired.Load() {
		limit = RepairedLossyPPM
	}
	for j := range a.in {
		if j == i || !a.in[j] {
			continue
		}
		if lj, _ := a.p.Learned(j); LossyAgainst(l.LossPPM, lj.LossPPM, limit) {
			return true
		}
	}
	return false
}

// LossyAgainst reports whether a path that loses loss (ppm, of its own) is
// lossy beside a path that loses other: limit or more, and 4 times other or
// more (loss that every path shows alike is the flows' congestion). The
// adaptive scheduler's lossy trial and the bond's repair offer both judge so.
func LossyAgainst(loss, other, limit uint32) bool { return loss >= limit && other*4 <= loss }
