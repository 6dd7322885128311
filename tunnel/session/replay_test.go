package session

import (
	"math/rand/v2"
	"testing"
)

func TestWindowEdges(t *testing.T) {
	type step struct {
		c    uint64
		want Drop
	}
	const W = WindowSize
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"first packet is 0", []step{{0, 0}, {0, DropReplayed}}},
		{"first packet is anything", []step{{1 << 40, 0}, {1<<40 - W + 1, 0}, {1<<40 - W, DropTooOld}}},
		{"in order", []step{{0, 0}, {1, 0}, {2, 0}, {3, 0}, {4, 0}}},
		{"reordered within the window", []step{{10, 0}, {7, 0}, {9, 0}, {8, 0}, {11, 0}, {7, DropReplayed}, {8, DropReplayed}}},
		{"duplicate", []step{{5, 0}, {6, 0}, {5, DropReplayed}, {6, DropReplayed}}},
		{"oldest still inside", []step{{W + 100, 0}, {101, 0}, {101, DropReplayed}}},
		{"one just outside", []step{{W + 100, 0}, {100, DropTooOld}}},
		{"edge after in-order run", []step{{0, 0}, {W - 1, 0}, {0, DropReplayed}, {W, 0}, {0, DropTooOld}, {1, 0}}},
		{"big jump ahead forgets all", []step{{1, 0}, {2, 0}, {1 << 50, 0}, {1<<50 - 1, 0}, {2, DropTooOld}, {1<<50 - W + 1, 0}, {1 << 50, DropReplayed}}},
		{"jump of exactly the ring", []step{{3, 0}, {3 + ringWords*wordBits, 0}, {3 + ringWords*wordBits - W + 1, 0}, {3 + ringWords*wordBits - 1, 0}}},
		{"jump that reuses a word", []step{{64, 0}, {64 + ringWords*wordBits - 1, 0}, {64 + ringWords*wordBits, 0}, {64 + ringWords*wordBits - 1, DropReplayed}, {ringWords * wordBits * 2, 0}, {ringWords*wordBits*2 - 64, 0}}},
		{"near 2^64", []step{
			{RejectAfterMessages - 2, 0},
			{RejectAfterMessages - 1, 0},
			{RejectAfterMessages, DropCounterLimit},
			{1<<64 - 1, DropCounterLimit},
			{RejectAfterMessages - 1, DropReplayed},
			{RejectAfterMessages - 1 - W, DropTooOld},
			{RejectAfterMessages - W, 0},
		}},
		{"limit before any packet", []step{{RejectAfterMessages, DropCounterLimit}, {0, 0}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var w Window
			for i, s := range tt.steps {
				if got := w.Check(s.c); got != s.want {
					t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.c, got, s.want)
				}
				if got := w.Accept(s.c); got != s.want {
					t.Fatalf("step %d: Accept(%d) = %v, want %v", i, s.c, got, s.want)
				}
			}
		})
	}
}

// TestWindowModel checks the ring against a plain set of seen counters
// and the rule (accept once iff within WindowSize of the newest) over
// random walks with reordering, duplicates and jumps.
func TestWindowModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for run := 0; run < 50; run++ {
		var w Window
		seen := map[uint64]bool{}
		var last uint64
		started := false
		next := uint64(r.IntN(10000))
		for i := 0; i < 5000; i++ {
			var c uint64
			switch k := r.IntN(100); {
			case k < 60:
				c = next
				next++
			case k < 85: // reordered or duplicated, near or past the edge
				back := uint64(r.IntN(WindowSize + 200))
				if back > next {
					back = next
				}
				c = next - back
			case k < 95:
				next += uint64(r.IntN(3 * WindowSize))
				c = next
			default:
				next += uint64(r.IntN(ringWords * wordBits * 3))
				c = next
			}
			want := Drop(0)
			switch {
			case started && c <= last && last-c >= WindowSize:
				want = DropTooOld
			case seen[c]:
				want = DropReplayed
			}
			if got := w.Accept(c); got != want {
				t.Fatalf("run %d step %d: Accept(%d) (last %d) = %v, want %v", run, i, c, last, got, want)
			}
			if want == 0 {
				seen[c] = true
				if !started || c > last {
					last, started = c, true
				}
			}
		}
	}
}

func TestWindowReset(t *testing.T) {
	var w Window
	w.Accept(5)
	w.Reset()
	if d := w.Accept(5); d != 0 {
		t.Fatalf("after Reset: %v", d)
	}
}

func TestRingPowerOfTwo(t *testing.T) {
	if ringWords&(ringWords-1) != 0 {
		t.Fatal("ringWords is not a power of two")
	}
}

// TestWindowTakesTwoSkewedPaths: a bond seals one counter sequence over
// two paths whose receive loops run apart: here path A's packets (every
// second counter) arrive 20000 counters after path B's. Every counter is
// accepted once (WireGuard's 2048-counter window dropped these as too old).
func TestWindowTakesTwoSkewedPaths(t *testing.T) {
	var w Window
	const n, skew = 100000, 20000
	accept := func(c uint64) {
		if d := w.Accept(c); d != 0 {
			t.Fatalf("counter %d (newest %d): %v", c, w.last, d)
		}
	}
	for c := uint64(1); c < n; c += 2 { // path B, ahead
		accept(c)
		if a := c + 1; a > skew { // path A, skew behind
			accept(a - skew)
		}
	}
	for a := uint64(n - skew + 2); a < n; a += 2 { // the rest of path A
		accept(a)
	}
	for c := uint64(1); c < n; c += 997 {
		if d := w.Check(c); c+WindowSize > w.last && d != DropReplayed {
			t.Fatalf("counter %d seen, yet Check says %v", c, d)
		}
	}
}
