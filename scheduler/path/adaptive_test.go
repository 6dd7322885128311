package path

import (
	"testing"
	"time"
)

// fakeClock is an injectable clock for the schedulers.
type fakeClock struct {
	t       time.Time
	lastFb  time.Time
	learned []Learned // the feedback offer() keeps arriving, if any
}

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// fakeClock also stands for the receiver: while it runs, the paths'
// feedback keeps arriving (every 10 ms) with the same news.
func (c *fakeClock) feedback(p *Paths, learned []Learned) {
	if c.t.Sub(c.lastFb) < 10*time.Millisecond {
		return
	}
	c.lastFb = c.t
	for i := range learned {
		learned[i].Feedback = c.t
		p.SetLearned(i, learned[i])
	}
}

// adaptiveRig is n paths, all up, with what feedback taught of each.
func adaptiveRig(learned ...Learned) (*Paths, *Adaptive, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := NewPaths(make([]uint32, len(learned)))
	for i := range learned {
		p.SetWeight(i, 1)
	}
	clk.learned = learned
	clk.feedback(p, learned)
	return p, NewAdaptive(p, clk.now), clk
}

// offer sends packets of size bytes at rate bytes/s for d and returns the
// bytes each path got.
func offer(a *Adaptive, clk *fakeClock, size int, rate float64, d time.Duration) []float64 {
	got := make([]float64, a.p.Len())
	pkt := make([]byte, size)
	gap := time.Duration(float64(size) / rate * 1e9)
	for end := clk.t.Add(d); clk.t.Before(end); clk.advance(gap) {
		if clk.learned != nil {
			clk.feedback(a.p, clk.learned)
		}
		if i := a.Pick(pkt); i >= 0 {
			got[i] += float64(size)
		}
	}
	return got
}

func fractions(b []float64) []float64 {
	var sum float64
	for _, x := range b {
		sum += x
	}
	out := make([]float64, len(b))
	for i, x := range b {
		out[i] = x / sum
	}
	return out
}

func TestAdaptive(t *testing.T) {
	const mb = 1e6 // bytes/s
	q := 5 * time.Millisecond
	for _, tt := range []struct {
		name    string
		paths   []Learned
		ceiling []float64
		offered float64 // bytes/s
		want    []float64
		tol     float64
	}{
		{
			// Light traffic fits in the fastest path: it all stays there, so
			// nothing waits in the reorder buffer.
			name:    "a flow that fits stays on the fastest path",
			paths:   []Learned{{Rate: 10 * mb, BaseOWD: 5 * time.Millisecond}, {Rate: 10 * mb, BaseOWD: 30 * time.Millisecond}},
			offered: 2 * mb, want: []float64{1, 0}, tol: 0,
		},
		{
			// Saturated paths of equal delay share by their learned rates.
			name:    "saturated equal delays share by rate",
			paths:   []Learned{{Rate: 30 * mb, Queue: q}, {Rate: 10 * mb, Queue: q}},
			offered: 80 * mb, want: []float64{0.75, 0.25}, tol: 0.01,
		},
		{
			// Only the excess spills, and onto the slower path just so much
			// that it arrives no later: the fast path takes 20 ms of queue
			// (the delay difference; 40 ms of the 200 at 5 MB/s of excess)
			// before the slow one gets a packet, then the two share 2:1:
			// (0.6 + 1.6) / 3 MB on the fast path.
			name:    "spill-over onto a slower path",
			paths:   []Learned{{Rate: 10 * mb, Queue: q}, {Rate: 10 * mb, Queue: q, BaseOWD: 20 * time.Millisecond}},
			offered: 15 * mb, want: []float64{0.733, 0.267}, tol: 0.01,
		},
		{
			// A ceiling caps a metered link below what it could carry.
			name:    "ceiling",
			paths:   []Learned{{Rate: 30 * mb, Queue: q}, {Rate: 30 * mb, Queue: q}},
			ceiling: []float64{0, 10 * mb},
			offered: 80 * mb, want: []float64{0.75, 0.25}, tol: 0.01,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, a, clk := adaptiveRig(tt.paths...)
			for i, c := range tt.ceiling {
				p.SetCeiling(i, c)
			}
			got := fractions(offer(a, clk, 1200, tt.offered, 200*time.Millisecond))
			for i := range got {
				if d := got[i] - tt.want[i]; d > tt.tol || d < -tt.tol {
					t.Fatalf("shares %.3f, want %.3f ± %.2f", got, tt.want, tt.tol)
				}
			}
		})
	}
}

// TestAdaptiveLeavesOutStalledAndDown: a stalled or down path gets nothing,
// and comes back when it is well again; with no path, Pick says so.
func TestAdaptiveLeavesOutStalledAndDown(t *testing.T) {
	p, a, clk := adaptiveRig(Learned{Rate: 10e6}, Learned{Rate: 10e6})
	p.SetStalled(0, true)
	if got := offer(a, clk, 1000, 20e6, 50*time.Millisecond); got[0] != 0 || got[1] == 0 {
		t.Fatalf("stalled path 0 got %v bytes", got)
	}
	p.SetStalled(0, false)
	p.SetUp(1, false)
	if got := offer(a, clk, 1000, 20e6, 50*time.Millisecond); got[1] != 0 || got[0] == 0 {
		t.Fatalf("down path 1 got %v bytes", got)
	}
	p.SetUp(0, false)
	if i := a.Pick(make([]byte, 100)); i != -1 {
		t.Fatalf("no path up, picked %d", i)
	}
}

// TestAdaptiveLossyTrial: a path that loses where the other does not is
// tried with and without; it is left out (single link) where the bond
// delivered more without it, and kept where it delivered more with it.
func TestAdaptiveLossyTrial(t *testing.T) {
	for _, tt := range []struct {
		name                string
		withRate, aloneRate float64 // bytes/s the bond delivers with the lossy path in use, and without
		wantOut             bool
	}{
		{"loss-based flows: alone is better", 2e6, 5e6, true},
		{"loss-blind flows: spreading is better", 9e6, 5e6, false},
		{"a tie keeps the path", 5e6, 5.1e6, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clean, lossy := Learned{Rate: 6e6, Queue: 5 * time.Millisecond}, Learned{Rate: 6e6, Queue: 5 * time.Millisecond, LossPPM: 20000}
			p, a, clk := adaptiveRig(clean, lossy)
			clk.learned = nil // run() is this test's receiver
			var delivered float64
			step := 10 * time.Millisecond
			run := func(d time.Duration) {
				for end := clk.t.Add(d); clk.t.Before(end); clk.advance(step) {
					a.Pick(make([]byte, 100))
					rate := tt.withRate
					if p.Excluded(1) != Included {
						rate = tt.aloneRate
					}
					delivered += rate * step.Seconds()
					// the receiver's counters, split as they come: the total is what counts
					clean.Delivered, clean.Feedback = uint64(delivered), clk.t
					lossy.Feedback = clk.t
					p.SetLearned(0, clean)
					p.SetLearned(1, lossy)
				}
			}
			run(TrialFor / 2)
			if p.Excluded(1) != Included || p.Solo() != -1 {
				t.Fatal("left out before its trial with it in use")
			}
			run(TrialFor)
			if p.Excluded(1) != ExcludedLossy || p.Solo() != 0 {
				t.Fatalf("during the trial without it: excluded %v, solo %d", p.Excluded(1), p.Solo())
			}
			run(TrialFor)
			if out := p.Excluded(1) == ExcludedLossy; out != tt.wantOut {
				t.Fatalf("after the trial: out %v, want %v", out, tt.wantOut)
			}
			if got := offer(a, clk, 1000, 20e6, 20*time.Millisecond); (got[1] == 0) != tt.wantOut {
				t.Fatalf("lossy path carried %v bytes, left out %v", got[1], tt.wantOut)
			}
			// the verdict holds (from the end of the trial, a second ago),
			// then is tried again
			run(HoldFor - 1500*time.Millisecond)
			if out := p.Excluded(1) == ExcludedLossy; out != tt.wantOut {
				t.Fatal("the verdict did not hold")
			}
			run(time.Second + TrialFor/2)
			if p.Excluded(1) != Included {
				t.Fatal("not tried again with it in use after the hold")
			}
		})
	}
}

// TestAdaptiveUnknownPaths: before any feedback, paths are assumed to carry
// BootstrapRate and are spread over by the keepalives' delays.
func TestAdaptiveUnknownPaths(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	p := NewPaths([]uint32{1, 1})
	p.SetDelay(0, 5*time.Millisecond)
	p.SetDelay(1, 5*time.Millisecond)
	a := NewAdaptive(p, clk.now)
	got := fractions(offer(a, clk, 1200, 4*BootstrapRate, 100*time.Millisecond))
	if got[0] < 0.45 || got[0] > 0.55 {
		t.Fatalf("shares %v over two unknown equal paths", got)
	}
}

func TestAdaptiveAllocatesNothing(t *testing.T) {
	_, a, clk := adaptiveRig(Learned{Rate: 10e6}, Learned{Rate: 10e6, BaseOWD: time.Millisecond}, Learned{Rate: 5e6, LossPPM: 30000})
	pkt := make([]byte, 1200)
	if n := testing.AllocsPerRun(10000, func() { clk.advance(100 * time.Microsecond); a.Pick(pkt) }); n != 0 {
		t.Fatalf("%v allocations per pick", n)
	}
}

func BenchmarkAdaptivePick(b *testing.B) {
	_, a, clk := adaptiveRig(Learned{Rate: 10e6}, Learned{Rate: 10e6, BaseOWD: time.Millisecond}, Learned{Rate: 5e6})
	pkt := make([]byte, 1200)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		clk.advance(50 * time.Nanosecond)
		a.Pick(pkt)
	}
}
