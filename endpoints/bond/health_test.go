package bond

import (
	"testing"
	"time"
)

func TestPathHealth(t *testing.T) {
	t0 := time.Unix(0, 0)
	h := pathHealth{interval: 200 * time.Millisecond, misses: 3}
	if h.check(t0) || h.up {
		t.Fatal("up before any reply")
	}
	if !h.onReply(t0, 10*time.Millisecond) || !h.up {
		t.Fatal("first reply did not bring the path up")
	}
	if h.onReply(t0.Add(200*time.Millisecond), 18*time.Millisecond) {
		t.Fatal("came up twice")
	}
	if h.srtt != 11*time.Millisecond {
		t.Fatalf("srtt %v", h.srtt)
	}
	if h.minRTT != 10*time.Millisecond {
		t.Fatalf("min RTT %v", h.minRTT)
	}
	h.onReply(t0.Add(31*time.Second), 30*time.Millisecond)
	if h.minRTT != 30*time.Millisecond {
		t.Fatalf("min RTT not renewed after its window: %v", h.minRTT)
	}
	h.onReply(t0.Add(31*time.Second), 20*time.Millisecond)
	if h.minRTT != 20*time.Millisecond {
		t.Fatalf("min RTT %v", h.minRTT)
	}
	h.lastReply = t0.Add(200 * time.Millisecond)
	last := t0.Add(200 * time.Millisecond)
	if h.check(last.Add(600 * time.Millisecond)) {
		t.Fatal("down at exactly interval × misses")
	}
	if !h.check(last.Add(601*time.Millisecond)) || h.up {
		t.Fatal("not down after interval × misses")
	}
	if h.check(last.Add(time.Second)) {
		t.Fatal("went down twice")
	}
	if !h.onReply(last.Add(2*time.Second), time.Millisecond) {
		t.Fatal("recovered path did not rejoin")
	}
}

func TestDelaySkewAdvice(t *testing.T) {
	ms := time.Millisecond
	if delaySkewAdvice("wrr", []time.Duration{4 * ms, 20 * ms}) == "" {
		t.Fatal("no advice for wrr over 4 ms and 20 ms paths")
	}
	for _, tt := range []struct {
		sched  string
		delays []time.Duration
	}{
		{"wrr", []time.Duration{5 * ms, 12 * ms}}, // close enough
		{"delay", []time.Duration{4 * ms, 40 * ms}},
		{"flowhash", []time.Duration{4 * ms, 40 * ms}},
		{"rr", []time.Duration{4 * ms}},
	} {
		if msg := delaySkewAdvice(tt.sched, tt.delays); msg != "" {
			t.Errorf("%s %v: unexpected advice %q", tt.sched, tt.delays, msg)
		}
	}
}
