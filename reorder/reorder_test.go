package reorder

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

var t0 = time.Unix(1000, 0)

type rig struct {
	t   *testing.T
	b   *Buffer[uint32]
	out []uint32
	now time.Time
}

func newRig(t *testing.T, window int, paths int) *rig {
	r := &rig{t: t, now: t0}
	var err error
	r.b, err = New(Config{Window: window, Timeout: 50 * time.Millisecond, Paths: paths}, func(s uint32) { r.out = append(r.out, s) })
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) push(path int, seqs ...uint32) {
	for _, s := range seqs {
		r.b.Push(s, path, s, r.now)
	}
}

func (r *rig) expect(want ...uint32) {
	r.t.Helper()
	if !slices.Equal(r.out, want) {
		r.t.Fatalf("released %v, want %v", r.out, want)
	}
	r.out = nil
}

func (r *rig) tick(d time.Duration) {
	r.now = r.now.Add(d)
	r.b.Expire(r.now)
}

func TestSinglePathGapIsLoss(t *testing.T) {
	r := newRig(t, 64, 1)
	r.push(0, 1, 5) // one path delivers in order: 2-4 are lost
	r.expect(1, 5)
	if r.b.Stats.HolesLost.Load() != 3 {
		t.Fatalf("lost %d", r.b.Stats.HolesLost.Load())
	}
}

func TestInOrder(t *testing.T) {
	r := newRig(t, 16, 1)
	r.push(0, 10, 11, 12)
	r.expect(10, 11, 12)
	if _, waiting := r.b.Deadline(); waiting {
		t.Fatal("deadline set with nothing held")
	}
}

func TestHoleFilledByOtherPath(t *testing.T) {
	r := newRig(t, 16, 2)
	r.push(0, 1)
	r.push(0, 3, 5) // 2 and 4 on path 1, in flight
	r.expect(1)
	if r.b.Held() != 2 {
		t.Fatalf("held %d", r.b.Held())
	}
	r.push(1, 2)
	r.expect(2, 3)
	r.push(1, 4)
	r.expect(4, 5)
	if r.b.Stats.Holes.Load() != 0 {
		t.Fatal("holes given up without loss")
	}
}

func TestFastLossDetection(t *testing.T) {
	r := newRig(t, 64, 2)
	r.push(0, 1)
	r.push(1, 2)
	r.push(0, 3, 5, 7) // path 0 carries odd
	// 4 was sent on path 1 and is lost; 6 follows on path 1.
	r.expect(1, 2, 3)
	r.push(1, 6)
	// Path 1 delivered 6 after 4: 4 is lost. Path 0 has passed 4 (7). No timeout needed.
	r.expect(5, 6, 7)
	if got := r.b.Stats.HolesLost.Load(); got != 1 {
		t.Fatalf("fast-lost holes %d, want 1", got)
	}
	if r.b.Stats.HolesTimeout.Load() != 0 {
		t.Fatal("timeout used")
	}
}

func TestKeepaliveWatermarkAdvancesIdlePath(t *testing.T) {
	r := newRig(t, 64, 2)
	r.push(0, 1, 3)
	r.expect(1)
	// Path 1 is idle; its keepalive says everything up to 3 has left on it.
	r.b.Watermark(1, 3, r.now)
	r.expect(3)
	if r.b.Stats.HolesLost.Load() != 1 {
		t.Fatal("hole 2 not declared lost by the watermark")
	}
}

func TestInactivePathIgnored(t *testing.T) {
	r := newRig(t, 64, 2)
	r.push(0, 1, 3)
	r.expect(1)
	r.b.SetActive(1, false, r.now) // path 1 went silent: only path 0 counts
	r.expect(3)
	r.b.Watermark(1, 3, r.now) // path 1 heard from again: it counts again
	r.push(0, 5)
	r.expect()
	r.push(1, 4)
	r.expect(4, 5)
}

func TestTimeout(t *testing.T) {
	r := newRig(t, 64, 2)
	r.push(0, 1, 3)
	r.expect(1)
	dl, ok := r.b.Deadline()
	if !ok || !dl.Equal(t0.Add(50*time.Millisecond)) {
		t.Fatalf("deadline %v %v", dl, ok)
	}
	r.tick(49 * time.Millisecond)
	r.expect()
	r.push(0, 6) // arrives later: hole 4-5 is detected now, not at t0
	r.tick(time.Millisecond)
	r.expect(3)
	if got := r.b.Stats.HolesTimeout.Load(); got != 1 {
		t.Fatalf("timeout holes %d", got)
	}
	r.tick(48 * time.Millisecond)
	r.expect()
	r.tick(time.Millisecond)
	r.expect(6)
	if got := r.b.Stats.HolesTimeout.Load(); got != 3 {
		t.Fatalf("timeout holes %d, want 3", got)
	}
	if r.b.Held() != 0 {
		t.Fatal("still holding")
	}
}

func TestReleasesWhenTrafficStops(t *testing.T) {
	r := newRig(t, 64, 2) // path 1 has said nothing: no fast detection, only the timer
	r.push(0, 1, 5, 6, 9)
	r.expect(1)
	r.tick(50 * time.Millisecond)
	r.expect(5, 6, 9)
}

func TestWindowOverflow(t *testing.T) {
	r := newRig(t, 4, 2)
	r.push(0, 1)
	r.push(0, 3, 4)
	r.expect(1)
	r.push(0, 6) // window 4: 6 needs next ≥ 3: hole 2 skipped, then 3 4 are in order
	r.expect(3, 4)
	if r.b.Stats.HolesOverflow.Load() != 1 || r.b.Stats.Overflow.Load() != 0 {
		t.Fatalf("overflow stats: holes %d released %d", r.b.Stats.HolesOverflow.Load(), r.b.Stats.Overflow.Load())
	}
	r.push(0, 100) // far ahead: everything before 97 goes, 6 released early
	r.expect(6)
	if r.b.Stats.Overflow.Load() != 1 || r.b.Stats.HolesOverflow.Load() != 1+1+90 {
		t.Fatalf("overflow stats: holes %d released %d", r.b.Stats.HolesOverflow.Load(), r.b.Stats.Overflow.Load())
	}
	r.push(1, 97, 98, 99)
	r.expect(97, 98, 99, 100)
}

func TestDuplicatesAndLate(t *testing.T) {
	r := newRig(t, 16, 2)
	r.push(0, 1, 3)
	r.push(0, 3)
	r.expect(1)
	if r.b.Stats.Duplicate.Load() != 1 {
		t.Fatal("duplicate not counted")
	}
	if r.b.Push(1, 0, 1, r.now) {
		t.Fatal("late packet accepted")
	}
	if r.b.Stats.Late.Load() != 1 {
		t.Fatal("late not counted")
	}
	r.push(1, 2)
	r.expect(2, 3)
	r.push(1, 3)
	if r.b.Stats.Late.Load() != 2 {
		t.Fatal("released packet again not counted as late")
	}
}

func TestWraparound(t *testing.T) {
	r := newRig(t, 16, 2)
	r.push(0, 0xfffffffd, 0xffffffff, 1)
	r.push(1, 0xfffffffe)
	r.expect(0xfffffffd, 0xfffffffe, 0xffffffff)
	r.push(1, 0)
	r.expect(0, 1)
	r.push(0, 0xffffffff)
	if r.b.Stats.Late.Load() != 1 {
		t.Fatal("pre-wrap packet after wrap not late")
	}
	// Fast loss across the wrap: 3 lost on path 1, which then delivers 4.
	r.push(0, 2, 5)
	r.expect(2)
	r.push(1, 4)
	r.expect(4, 5)
}

func TestSequenceRestart(t *testing.T) {
	r := newRig(t, 16, 1)
	r.push(0, 1000, 1001)
	r.expect(1000, 1001)
	r.push(0, 1) // peer restarted
	r.expect(1)
	if r.b.Stats.Resync.Load() != 1 {
		t.Fatal("restart not counted")
	}
}

func TestWaitHistogram(t *testing.T) {
	r := newRig(t, 16, 2)
	r.push(0, 1, 3)
	r.now = r.now.Add(3 * time.Millisecond)
	r.push(1, 2)
	r.expect(1, 2, 3)
	b, count, sum := r.b.Stats.Wait.Snapshot()
	if count != 3 || b[0.002] != 2 || b[0.005] != 3 {
		t.Fatalf("histogram %v count %d", b, count)
	}
	if sum < 0.0029 || sum > 0.0031 {
		t.Fatalf("sum %v", sum)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := New(Config{Window: 0, Timeout: time.Second}, func(int) {}); err == nil {
		t.Fatal("window 0 accepted")
	}
	if _, err := New(Config{Window: 8}, func(int) {}); err == nil {
		t.Fatal("timeout 0 accepted")
	}
}

func BenchmarkPushInOrder(b *testing.B) {
	buf, _ := New(Config{Window: 4096, Timeout: 50 * time.Millisecond, Paths: 2}, func(uint32) {})
	b.ReportAllocs()
	seq := uint32(0)
	for b.Loop() {
		buf.Push(seq, int(seq&1), seq, t0)
		seq++
	}
}

func BenchmarkPushReordered(b *testing.B) {
	buf, _ := New(Config{Window: 4096, Timeout: 50 * time.Millisecond, Paths: 2}, func(uint32) {})
	b.ReportAllocs()
	seq := uint32(0)
	for b.Loop() {
		// pairs swapped: 1 0 3 2 5 4 ...
		s := seq ^ 1
		buf.Push(s, int(s&1), s, t0)
		seq++
	}
}

func TestWatermarkSetsStart(t *testing.T) {
	r := newRig(t, 16, 2)
	r.b.Watermark(0, 99, r.now) // peer: everything up to 99 already sent
	r.push(1, 101)
	r.expect()
	r.push(0, 100)
	r.expect(100, 101)
}

func TestLossGrace(t *testing.T) {
	r := &rig{t: t, now: t0}
	var err error
	r.b, err = New(Config{Window: 64, Timeout: 50 * time.Millisecond, LossGrace: 2 * time.Millisecond, Paths: 2},
		func(s uint32) { r.out = append(r.out, s) })
	if err != nil {
		t.Fatal(err)
	}
	r.push(0, 1)
	r.push(1, 2)
	r.push(0, 4) // 3 was on path 1
	r.push(1, 5) // both paths past 3: lost, but it may still trail on its path
	r.expect(1, 2)
	if dl, _ := r.b.Deadline(); !dl.Equal(t0.Add(2 * time.Millisecond)) {
		t.Fatalf("deadline %v, want the end of the grace", dl.Sub(t0))
	}
	r.now = r.now.Add(time.Millisecond)
	r.push(1, 3) // it did trail: not lost after all
	r.expect(3, 4, 5)
	r.push(0, 7)
	r.push(1, 8) // 6 is lost for good
	r.tick(2 * time.Millisecond)
	r.expect(7, 8)
	if r.b.Stats.HolesLost.Load() != 1 || r.b.Stats.Late.Load() != 0 || r.b.Stats.HolesTimeout.Load() != 0 {
		t.Fatalf("lost %d late %d timeout %d", r.b.Stats.HolesLost.Load(), r.b.Stats.Late.Load(), r.b.Stats.HolesTimeout.Load())
	}
	if _, err := New(Config{Window: 8, Timeout: time.Millisecond, LossGrace: time.Second}, func(int) {}); err == nil {
		t.Fatal("grace longer than the timeout accepted")
	}
}

func TestAdaptiveLossGrace(t *testing.T) {
	r := &rig{t: t, now: t0}
	var err error
	r.b, err = New(Config{Window: 64, Timeout: 50 * time.Millisecond, LossGrace: time.Millisecond, Paths: 2},
		func(s uint32) { r.out = append(r.out, s) })
	if err != nil {
		t.Fatal(err)
	}
	r.push(0, 1)
	r.push(1, 2)
	r.push(0, 4)
	r.push(1, 5) // 3 looks lost
	r.tick(time.Millisecond)
	r.expect(1, 2, 4, 5)
	r.now = r.now.Add(3 * time.Millisecond)
	r.push(1, 3) // but it trailed on its path by 4 ms: handed on late
	r.expect(3)
	if r.b.Stats.Spurious.Load() != 1 || r.b.Stats.LateDelivered.Load() != 1 {
		t.Fatal("spurious loss not recognised")
	}
	if g := time.Duration(r.b.Stats.GraceNs.Load()); g != 5*time.Millisecond {
		t.Fatalf("grace %v, want 5ms (4ms needed × 1.25)", g)
	}
	// The same trailing now waits long enough.
	r.push(0, 7)
	r.push(1, 8)
	r.tick(4 * time.Millisecond)
	r.expect()
	r.push(1, 6)
	r.expect(6, 7, 8)
	// A second without spurious losses shrinks the grace by an eighth.
	r.tick(time.Second)
	r.push(0, 9)
	if g := time.Duration(r.b.Stats.GraceNs.Load()); g != 5*time.Millisecond-5*time.Millisecond/8 {
		t.Fatalf("grace after a quiet second %v", g)
	}
	// It never grows past the timeout.
	r.push(0, 11)
	r.push(1, 12)
	r.tick(5 * time.Millisecond)
	r.now = r.now.Add(time.Second)
	r.push(1, 10)
	if g := time.Duration(r.b.Stats.GraceNs.Load()); g != 50*time.Millisecond {
		t.Fatalf("grace %v, want capped at the 50ms timeout", g)
	}
}

func TestSetTimeout(t *testing.T) {
	r := newRig(t, 64, 2)
	r.push(0, 1, 3)
	r.expect(1)
	r.b.SetTimeout(100*time.Millisecond, r.now)
	r.tick(60 * time.Millisecond)
	r.expect() // still waiting: the timeout is now 100 ms
	r.b.SetTimeout(20*time.Millisecond, r.now)
	r.expect(3) // already past a 20 ms timeout
	if time.Duration(r.b.Stats.TimeoutNs.Load()) != 20*time.Millisecond {
		t.Fatal("timeout stat")
	}
}

func (r *rig) counters() (holes, late, resync, oow uint64) {
	s := &r.b.Stats
	return s.Holes.Load(), s.Late.Load(), s.Resync.Load(), s.OutOfWindow.Load()
}

// TestStrictForgedJumps: with the sender's epoch known, a sequence a window
// beyond everything seen, or far behind, is dropped and counted once; the
// stream is delivered on at once and no other counter moves.
func TestStrictForgedJumps(t *testing.T) {
	for _, tt := range []struct {
		name string
		seq  uint32
	}{
		{"just ahead", 5 + 64},
		{"far ahead", 5 + 1<<30},
		{"far behind", 5 + 3<<30},
		{"just behind the window", 1<<32 + 6 - 64 - 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 64, 2)
			r.b.SetStrict(true)
			r.push(0, 1, 2, 3, 4, 5)
			r.expect(1, 2, 3, 4, 5)
			if r.b.Push(tt.seq, 0, tt.seq, r.now) {
				t.Fatalf("forged %d accepted", tt.seq)
			}
			r.push(0, 6, 7)
			r.push(1, 8)
			r.expect(6, 7, 8) // at once: nothing waited for, nothing skipped
			if holes, late, resync, oow := r.counters(); holes != 0 || late != 0 || resync != 0 || oow != 1 {
				t.Fatalf("holes %d late %d resync %d out of window %d; want 0 0 0 1", holes, late, resync, oow)
			}
			// The forged sequence moved no watermark of path 0: a hole that
			// path 1 passed is still waited for.
			r.push(1, 10)
			r.expect()
			r.push(0, 9)
			r.expect(9, 10)
			if r.b.Stats.HolesLost.Load() != 0 {
				t.Fatal("a hole given up on a forged watermark")
			}
		})
	}
}

// TestStrictWindowOverflowStays: a real stream running a window ahead of a
// hole still forces the oldest out, as without epochs.
func TestStrictWindowOverflowStays(t *testing.T) {
	r := newRig(t, 4, 2)
	r.b.SetStrict(true)
	r.push(0, 1)
	r.push(0, 3, 4, 5, 6, 7) // 6 is a window beyond the hole at 2
	r.expect(1, 3, 4, 5, 6, 7)
	if r.b.Stats.HolesOverflow.Load() != 1 || r.b.Stats.OutOfWindow.Load() != 0 {
		t.Fatalf("holes overflow %d out of window %d", r.b.Stats.HolesOverflow.Load(), r.b.Stats.OutOfWindow.Load())
	}
}

// TestStrictWatermarkAnnouncesJump: a keepalive's watermark far ahead (every
// path lost more than a window) makes the data after it acceptable.
func TestStrictWatermarkAnnouncesJump(t *testing.T) {
	r := newRig(t, 16, 1)
	r.b.SetStrict(true)
	r.push(0, 1, 2)
	r.expect(1, 2)
	if r.b.Push(5000, 0, 5000, r.now) {
		t.Fatal("unannounced jump accepted")
	}
	r.b.Watermark(0, 4999, r.now)
	r.push(0, 5000, 5001)
	r.expect(5000, 5001)
}

// TestWithoutEpochsFarBehindIsARestart: the guess older peers need stays.
func TestWithoutEpochsFarBehindIsARestart(t *testing.T) {
	r := newRig(t, 16, 1)
	r.push(0, 1<<30, 1<<30+1)
	r.push(0, 7)
	r.expect(1<<30, 1<<30+1, 7)
	if _, _, resync, oow := r.counters(); resync != 1 || oow != 0 {
		t.Fatalf("resync %d out of window %d", resync, oow)
	}
}

// TestReset: what is held is released, holes are not counted, the paths'
// watermarks are forgotten and the next packet starts a new stream.
func TestReset(t *testing.T) {
	r := newRig(t, 64, 2)
	r.b.SetStrict(true)
	r.push(0, 1000)
	r.push(1, 1002)
	r.b.Watermark(1, 1010, r.now)
	r.expect(1000)
	r.b.Reset(r.now)
	r.expect(1002)
	if holes, late, resync, oow := r.counters(); holes != 0 || late != 0 || resync != 0 || oow != 0 || r.b.Held() != 0 {
		t.Fatalf("after Reset: holes %d late %d resync %d out of window %d held %d", holes, late, resync, oow, r.b.Held())
	}
	// The new stream starts anywhere (here far behind, still strict).
	r.push(0, 5, 7)
	r.expect(5)
	// Path 1's old watermark (1010) is gone: hole 6 is still waited for.
	if r.b.Stats.HolesLost.Load() != 0 || r.b.Held() != 1 {
		t.Fatalf("hole given up on an old watermark: lost %d held %d", r.b.Stats.HolesLost.Load(), r.b.Held())
	}
	r.push(1, 6)
	r.expect(6, 7)
	if holes, _, resync, oow := r.counters(); holes != 0 || resync != 0 || oow != 0 {
		t.Fatalf("holes %d resync %d out of window %d", holes, resync, oow)
	}
}

// TestHoleSinceIsTheEarliestHeld: after any mix of in-order runs, holes,
// late fills, timeouts and overflows, holeSince is the earliest arrival
// among the packets held, as a scan of the window finds it (the buffer
// keeps it from its arrival list, not by scanning).
func TestHoleSinceIsTheEarliestHeld(t *testing.T) {
	const window = 256
	b, err := New(Config{Window: window, Timeout: 50 * time.Millisecond, LossGrace: time.Millisecond, Paths: 2}, func(uint32) {})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(0, 0)
	next := uint32(1)
	b.Watermark(0, 0, now)
	for i := 0; i < 200000; i++ {
		now = now.Add(time.Duration(r.IntN(300)) * time.Microsecond)
		seq := next + uint32(r.IntN(window/2)) // ahead, out of order, or over the window's end at times
		if r.IntN(50) == 0 {
			seq += window
		}
		if r.IntN(4) != 0 {
			next++
			seq = next - 1
		}
		b.Push(seq, r.IntN(2), seq, now)
		if r.IntN(100) == 0 {
			b.Expire(now)
		}
		if b.held == 0 {
			continue
		}
		var first time.Time
		found := false
		for j := range b.slots {
			if s := b.slots[j]; s.present && (!found || s.at.Before(first)) {
				first, found = s.at, true
			}
		}
		if !b.holeSince.Equal(first) {
			t.Fatalf("push %d: holeSince %v, the earliest held arrived %v", i, b.holeSince, first)
		}
	}
}

// TestHistogramQuantile: the bucket bound holding a quantile, or the last
// bound and false past it.
func TestHistogramQuantile(t *testing.T) {
	var h Histogram
	if _, ok := h.Quantile(0.99); ok {
		t.Fatal("a quantile of nothing")
	}
	for i := 0; i < 98; i++ {
		h.Observe(300 * time.Microsecond) // the 500 µs bucket
	}
	h.Observe(15 * time.Millisecond) // 20 ms
	h.Observe(time.Second)           // past the last bound
	if d, ok := h.Quantile(0.5); !ok || d != 500*time.Microsecond {
		t.Errorf("p50 %v %v, want 500µs", d, ok)
	}
	if d, ok := h.Quantile(0.99); !ok || d != 20*time.Millisecond {
		t.Errorf("p99 %v %v, want 20ms", d, ok)
	}
	if d, ok := h.Quantile(1); ok || d != 500*time.Millisecond {
		t.Errorf("p100 %v %v, want 500ms and false", d, ok)
	}
}
