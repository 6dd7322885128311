package emulator

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var t0 = time.Unix(100, 0)

func rng() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

func TestDelayOnly(t *testing.T) {
	s := NewShaper(Params{Delay: 10 * time.Millisecond}, rng())
	d, v := s.Admit(t0, 1500)
	if v != Pass || d.Sub(t0) != 10*time.Millisecond {
		t.Fatalf("depart after %v (%v)", d.Sub(t0), v)
	}
}

func TestRateSerialisesAndTailDrops(t *testing.T) {
	// 12 Mbit/s: a 1500-byte frame takes 1 ms.
	s := NewShaper(Params{RateBps: 12e6, Queue: 5 * time.Millisecond}, rng())
	var last time.Time
	passed := 0
	for i := 0; i < 10; i++ { // a burst of 10 frames at once
		d, v := s.Admit(t0, 1500)
		if v == Pass {
			passed++
			last = d
		}
	}
	if passed != 6 { // 1 + 5 ms of queue
		t.Fatalf("%d frames passed a 5ms queue", passed)
	}
	if last.Sub(t0) != 6*time.Millisecond {
		t.Fatalf("last leaves after %v", last.Sub(t0))
	}
}

func TestRateOverTime(t *testing.T) {
	s := NewShaper(Params{RateBps: 50e6}, rng())
	now := t0
	sent := 0
	var last time.Time
	for now.Sub(t0) < time.Second {
		if d, v := s.Admit(now, 1000); v == Pass {
			sent += 1000
			last = d
		}
		now = now.Add(100 * time.Microsecond) // offered: 80 Mbit/s
	}
	got := float64(sent*8) / last.Sub(t0).Seconds()
	if math.Abs(got-50e6) > 0.01*50e6 {
		t.Fatalf("rate %.1f Mbit/s, want 50", got/1e6)
	}
}

func TestJitterKeepsOrderUnlessAsked(t *testing.T) {
	for _, reorder := range []bool{false, true} {
		s := NewShaper(Params{Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: reorder}, rng())
		var prev time.Time
		swapped := 0
		var min, max time.Duration = time.Hour, 0
		for i := 0; i < 1000; i++ {
			now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
			d, _ := s.Admit(now, 100)
			if d.Before(prev) {
				swapped++
			}
			prev = d
			lat := d.Sub(now)
			min, max = minD(min, lat), maxD(max, lat)
		}
		if !reorder && swapped != 0 {
			t.Fatalf("%d frames reordered on an in-order link", swapped)
		}
		if reorder && swapped == 0 {
			t.Fatal("reorder asked but none happened")
		}
		if min < 5*time.Millisecond || max > 20*time.Millisecond {
			t.Fatalf("latency range %v..%v for 10ms ±5ms", min, max)
		}
	}
}

func minD(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

func maxD(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func TestRandomLoss(t *testing.T) {
	s := NewShaper(Params{Loss: 0.02}, rng())
	lost := 0
	for i := 0; i < 100000; i++ {
		if _, v := s.Admit(t0, 100); v == DropLoss {
			lost++
		}
	}
	if math.Abs(float64(lost)/100000-0.02) > 0.002 {
		t.Fatalf("loss %.4f, want 0.02", float64(lost)/100000)
	}
}

func TestGilbertElliottIsBursty(t *testing.T) {
	ge := GilbertElliott{P: 0.01, R: 0.3, LossGood: 0, LossBad: 0.5}
	s := NewShaper(Params{GE: &ge}, rng())
	lost, runs, prevLost := 0, 0, false
	const n = 200000
	for i := 0; i < n; i++ {
		_, v := s.Admit(t0, 100)
		l := v == DropLoss
		if l {
			lost++
			if !prevLost {
				runs++
			}
		}
		prevLost = l
	}
	got := float64(lost) / n
	if math.Abs(got-ge.MeanLoss()) > 0.2*ge.MeanLoss() {
		t.Fatalf("loss %.4f, model %.4f", got, ge.MeanLoss())
	}
	// Same loss rate spread at random would give runs ≈ lost·(1−loss);
	// bursts give markedly fewer, longer runs.
	if mean := float64(lost) / float64(runs); mean < 1.2 {
		t.Fatalf("mean loss burst %.2f frames: not bursty", mean)
	}
}

func ms(n float64) time.Duration { return time.Duration(n * float64(time.Millisecond)) }

func TestScheduleInForce(t *testing.T) {
	base := Params{RateBps: 100e6, Delay: 10 * time.Millisecond}
	steps := []Step{
		{After: 15 * time.Second, RateBps: 50e6, Delay: 20 * time.Millisecond},
		{After: 15 * time.Second, RateBps: 200e6, Delay: 30 * time.Millisecond, Loss: 0.01},
		{After: 30 * time.Second, RateBps: 80e6, Delay: 40 * time.Millisecond},
	}
	// Steps take effect at 15 s, 30 s and 60 s; with repeat the cycle is
	// 60 s, so the last step holds until 75 s, when the first comes back.
	type want struct {
		at   time.Duration
		step int // -1: the base
	}
	for _, tt := range []struct {
		repeat bool
		want   []want
	}{
		{true, []want{{0, -1}, {15*time.Second - 1, -1}, {15 * time.Second, 0}, {30*time.Second - 1, 0},
			{30 * time.Second, 1}, {60*time.Second - 1, 1}, {60 * time.Second, 2}, {75*time.Second - 1, 2},
			{75 * time.Second, 0}, {90 * time.Second, 1}, {120 * time.Second, 2}, {135 * time.Second, 0},
			{6080 * time.Second, 0}, {6110 * time.Second, 1}, {6130 * time.Second, 2},
			{10 * time.Second, -1}}}, // back in time: the base again
		{false, []want{{14 * time.Second, -1}, {15 * time.Second, 0}, {45 * time.Second, 1},
			{60 * time.Second, 2}, {75 * time.Second, 2}, {3600 * time.Second, 2}}},
	} {
		p := base
		p.Schedule = &Schedule{Steps: steps, Repeat: tt.repeat}
		s := NewShaperAt(p, rng(), t0)
		for _, w := range tt.want {
			got := s.InForce(t0.Add(w.at))
			wr, wd, wl := base.RateBps, base.Delay, base.Loss
			if w.step >= 0 {
				wr, wd, wl = steps[w.step].RateBps, steps[w.step].Delay, steps[w.step].Loss
			}
			if got.RateBps != wr || got.Delay != wd || got.Loss != wl {
				t.Errorf("repeat=%v at %v: rate %g delay %v loss %g, want step %d (%g %v %g)",
					tt.repeat, w.at, got.RateBps, got.Delay, got.Loss, w.step, wr, wd, wl)
			}
		}
	}
}

func TestScheduleShapesFrames(t *testing.T) {
	// 12 Mbit/s (1 ms a 1500-byte frame) and 10 ms; from 1 s, 6 Mbit/s and
	// 30 ms; from 2 s, everything lost; from 3 s, back to the first step.
	p := Params{RateBps: 12e6, Delay: 10 * time.Millisecond, Schedule: &Schedule{Repeat: true, Steps: []Step{
		{After: time.Second, RateBps: 6e6, Delay: 30 * time.Millisecond},
		{After: time.Second, RateBps: 12e6, Delay: 10 * time.Millisecond, Loss: 1},
	}}}
	s := NewShaperAt(p, rng(), t0)
	for _, tt := range []struct {
		at, depart time.Duration // depart < 0: lost
	}{
		{ms(500), ms(500 + 1 + 10)},
		{ms(1500), ms(1500 + 2 + 30)},
		{ms(2500), -1},
		{ms(3500), ms(3500 + 2 + 30)},
	} {
		d, v := s.Admit(t0.Add(tt.at), 1500)
		if tt.depart < 0 {
			if v != DropLoss {
				t.Errorf("at %v: %v, want lost", tt.at, v)
			}
			continue
		}
		if v != Pass || d.Sub(t0) != tt.depart {
			t.Errorf("at %v: departs at %v (%v), want %v", tt.at, d.Sub(t0), v, tt.depart)
		}
	}
}

func TestTraceDepartures(t *testing.T) {
	// Opportunities at 1, 1, 3, 10 ms, repeating every 10 ms.
	tr, err := ParseTrace("t", []byte("1\n1\n3\n10\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewShaperAt(Params{Trace: tr, Delay: 5 * time.Millisecond, Queue: 100 * time.Millisecond}, rng(), t0)
	for i, tt := range []struct {
		at     time.Duration
		size   int
		depart time.Duration
	}{
		{0, 1500, ms(1 + 5)},     // opportunity 1 ms
		{0, 100, ms(1 + 5)},      // the other one at 1 ms: a frame never shares
		{0, 3000, ms(10 + 5)},    // two: 3 and 10 ms
		{0, 3001, ms(13 + 5)},    // three: 11, 11, 13 ms
		{ms(50), 1500, ms(55)},   // idle till 50 ms: the 4th cycle's last one, at 50
		{ms(50), 1500, ms(56)},   // 51
		{ms(51), 1, ms(56)},      // the other one at 51 ms
		{ms(52), 0, ms(58)},      // 53
		{ms(54), 1500, ms(65)},   // 60
		{ms(61.5), 1500, ms(68)}, // the two at 61 ms passed unused: 63
	} {
		d, v := s.Admit(t0.Add(tt.at), tt.size)
		if v != Pass || d.Sub(t0) != tt.depart {
			t.Errorf("frame %d (%d bytes at %v): departs at %v (%v), want %v", i, tt.size, tt.at, d.Sub(t0), v, tt.depart)
		}
	}
}

func TestTraceQueueLimit(t *testing.T) {
	tr, _ := ParseTrace("t", []byte("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n")) // 12 Mbit/s
	s := NewShaperAt(Params{Trace: tr, Queue: 5 * time.Millisecond}, rng(), t0)
	var verdicts []Verdict
	for i := 0; i < 8; i++ { // a burst at once: 1..5 ms wait ≤ 5 ms, the rest drop
		_, v := s.Admit(t0, 1500)
		verdicts = append(verdicts, v)
	}
	want := []Verdict{Pass, Pass, Pass, Pass, Pass, DropQueue, DropQueue, DropQueue}
	for i := range want {
		if verdicts[i] != want[i] {
			t.Fatalf("burst verdicts %v, want %v", verdicts, want)
		}
	}
	// A dropped frame uses no opportunity: the next one, at 3 ms, gets 6 ms.
	if d, v := s.Admit(t0.Add(ms(3)), 1500); v != Pass || d.Sub(t0) != ms(6) {
		t.Fatalf("after the drops: %v at %v, want pass at 6ms", v, d.Sub(t0))
	}
}

func TestTraceRateOverTime(t *testing.T) {
	// 2 s repeating: 1..4 opportunities a ms, changing every 100 ms.
	var b []byte
	for m := 1; m <= 2000; m++ {
		for j := 0; j <= (m/100)%4; j++ {
			b = fmt.Appendf(b, "%d\n", m)
		}
	}
	tr, err := ParseTrace("t", b)
	if err != nil {
		t.Fatal(err)
	}
	mean := tr.MeanBps()
	if math.Abs(mean-30e6) > 0.01*30e6 { // 2.5 opportunities a ms on average
		t.Fatalf("trace mean %.2f Mbit/s, want 30", mean/1e6)
	}
	s := NewShaperAt(Params{Trace: tr}, rng(), t0)
	const periods = 3
	end := t0.Add(periods * tr.Period())
	sent := 0
	for now := t0; now.Before(end); now = now.Add(50 * time.Microsecond) { // offered: 240 Mbit/s
		if d, v := s.Admit(now, 1500); v == Pass && !d.After(end) {
			sent += 1500
		}
	}
	got := float64(sent*8) / (periods * tr.Period().Seconds())
	if math.Abs(got-mean) > 0.02*mean {
		t.Fatalf("replayed %.2f Mbit/s, trace mean %.2f", got/1e6, mean/1e6)
	}
}

func TestParseTraceErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"1\nx\n", "line 2"},
		{"5\n3\n", "line 2"},
		{"", "no delivery"},
		{"0\n0\n", "no delivery"},
	} {
		if _, err := ParseTrace("t", []byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error naming %s", tt.in, err, tt.want)
		}
	}
}

func TestAdmitDoesNotAllocate(t *testing.T) {
	tr, _ := ParseTrace("t", []byte("1\n1\n3\n10\n"))
	sc := &Schedule{Repeat: true, Steps: []Step{{After: ms(3), RateBps: 1e6}, {After: ms(7), RateBps: 5e6, Delay: ms(2)}}}
	for _, p := range []Params{{RateBps: 10e6, Schedule: sc}, {Trace: tr, Schedule: sc}} {
		s := NewShaperAt(p, rng(), t0)
		now := t0
		if a := testing.AllocsPerRun(10000, func() { now = now.Add(ms(0.3)); s.Admit(now, 1500) }); a != 0 {
			t.Errorf("%+v: %v allocations an Admit", p, a)
		}
	}
}

func TestMeanRate(t *testing.T) {
	sc := &Schedule{Repeat: true, Steps: []Step{{After: time.Second, RateBps: 10e6}, {After: 3 * time.Second, RateBps: 20e6}}}
	// 10 Mbit/s holds 3 s (until the second step), 20 Mbit/s 1 s (until the first again).
	if got := (Params{RateBps: 99e6, Schedule: sc}).MeanRateBps(); math.Abs(got-12.5e6) > 1 {
		t.Fatalf("mean %g, want 12.5e6", got)
	}
	sc.Repeat = false
	if got := (Params{RateBps: 99e6, Schedule: sc}).MeanRateBps(); got != 20e6 {
		t.Fatalf("mean without repeat %g, want the last step's 20e6", got)
	}
}

func TestRestart(t *testing.T) {
	p := Params{RateBps: 12e6, Delay: 10 * time.Millisecond, Schedule: &Schedule{Repeat: true, Steps: []Step{
		{After: time.Second, RateBps: 6e6, Delay: 30 * time.Millisecond},
	}}}
	s := NewShaperAt(p, rng(), t0)
	if got := s.InForce(t0.Add(ms(1500))); got.Delay != 30*time.Millisecond {
		t.Fatalf("before the restart, at 1.5 s: %v, want the step's 30ms", got.Delay)
	}
	s.Restart(t0.Add(ms(1200)))
	for _, tt := range []struct {
		at    time.Duration
		delay time.Duration
	}{{ms(1500), 10 * time.Millisecond}, {ms(2199), 10 * time.Millisecond}, {ms(2200), 30 * time.Millisecond}} {
		if got := s.InForce(t0.Add(tt.at)); got.Delay != tt.delay {
			t.Errorf("restarted at 1.2 s, at %v: %v, want %v", tt.at, got.Delay, tt.delay)
		}
	}

	// A trace restarts at its first opportunity, but not before the frames
	// queued have left.
	tr, _ := ParseTrace("t", []byte("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n"))
	s = NewShaperAt(Params{Trace: tr}, rng(), t0)
	for i := 0; i < 4; i++ {
		s.Admit(t0.Add(ms(5)), 1500) // opportunities 5..8 ms
	}
	s.Restart(t0.Add(ms(5.5))) // its opportunities now at 6.5, 7.5, … ms
	for _, want := range []time.Duration{ms(8.5), ms(9.5)} {
		if d, v := s.Admit(t0.Add(ms(5.5)), 1500); v != Pass || d.Sub(t0) != want {
			t.Errorf("after the restart: departs at %v (%v), want %v", d.Sub(t0), v, want)
		}
	}
}

func TestScheduleCheck(t *testing.T) {
	for _, tt := range []struct {
		s  Schedule
		ok bool
	}{
		{Schedule{}, false},
		{Schedule{Steps: []Step{{After: time.Second}, {After: 0}}}, false},
		{Schedule{Steps: []Step{{After: time.Second}}, Repeat: true}, true},
	} {
		if err := tt.s.Check(); (err == nil) != tt.ok {
			t.Errorf("%+v: Check %v, want ok=%v", tt.s, err, tt.ok)
		}
	}
	// An unchecked zero period does not divide by zero: it does not cycle.
	s := NewShaperAt(Params{Schedule: &Schedule{Repeat: true, Steps: []Step{{After: 0, Delay: ms(7)}}}}, rng(), t0)
	if got := s.InForce(t0.Add(time.Hour)); got.Delay != ms(7) {
		t.Fatalf("zero-period schedule: %v", got.Delay)
	}
}
