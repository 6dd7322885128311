package endpoints

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
