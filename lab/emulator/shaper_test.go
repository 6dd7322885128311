package emulator

import (
	"math"
	"math/rand/v2"
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
