package path

import "testing"

func TestWindowed(t *testing.T) {
	var mx WindowedMax[float64]
	var mn WindowedMin[int64]
	if _, ok := mx.Value(); ok {
		t.Fatal("empty max has a value")
	}
	if _, ok := mn.Value(); ok {
		t.Fatal("empty min has a value")
	}
	const win = 1000 // sub-windows of 100
	steps := []struct {
		t      int64
		v      int64
		max    float64
		min    int64
		reason string
	}{
		{0, 50, 50, 50, "first"},
		{10, 80, 80, 50, "same sub-window"},
		{150, 20, 80, 20, "new sub-window"},
		{990, 60, 80, 20, "all within the window"},
		{1005, 60, 60, 20, "0's sub-window (and its 80) began a window ago, 150's did not"},
		{1151, 60, 60, 60, "150's began a window ago"},
		{1152, 90, 90, 60, "a new extreme at once"},
		{5000, 10, 10, 10, "everything expired"},
		{4000, 30, 30, 10, "an older time is taken as of the latest"},
	}
	for _, s := range steps {
		mx.Update(s.t, float64(s.v), win)
		mn.Update(s.t, s.v, win)
		if v, _ := mx.Value(); v != s.max {
			t.Errorf("t=%d %s: max %v, want %v", s.t, s.reason, v, s.max)
		}
		if v, _ := mn.Value(); v != s.min {
			t.Errorf("t=%d %s: min %v, want %v", s.t, s.reason, v, s.min)
		}
	}
	// Without samples time does not pass: the value stays.
	if v, ok := mx.Value(); !ok || v != 30 {
		t.Fatalf("max %v %v", v, ok)
	}
	// A window that shrinks takes effect at the next sample.
	mx.Update(5050, 5, 10)
	if v, _ := mx.Value(); v != 5 {
		t.Fatalf("after the window shrank: %v", v)
	}
	mx.Reset()
	if _, ok := mx.Value(); ok {
		t.Fatal("Reset kept a value")
	}
}

// TestWindowedBoundedMemory: a falling series (the worst case for a
// monotonic queue) over many windows keeps the window's extreme in fixed
// memory, within a sub-window.
func TestWindowedBoundedMemory(t *testing.T) {
	var mx WindowedMax[int64]
	for ts := int64(0); ts < 100000; ts++ {
		mx.Update(ts, -ts, 1000)
		v, _ := mx.Value()
		if oldest := ts - 1000; ts >= 1000 && (-v > oldest+100 || -v < oldest) {
			t.Fatalf("t=%d: max %d, want within a sub-window of %d", ts, v, -oldest)
		}
	}
}
