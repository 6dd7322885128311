package reorder

import (
	"testing"
	"time"
)

// TestLateHoleDelivered: a packet whose hole was given up (by any of the
// three ways) is handed on once when it turns up; a second copy is dropped.
func TestLateHoleDelivered(t *testing.T) {
	for _, tt := range []struct {
		name   string
		paths  int
		giveUp func(r *rig) // leaves 3 given up, 1 2 4 released
		stat   func(s *Stats) uint64
	}{
		{"timeout", 2, func(r *rig) {
			r.push(0, 1, 2, 4) // path 1 silent: only the timer gives 3 up
			r.tick(50 * time.Millisecond)
		}, func(s *Stats) uint64 { return s.HolesTimeout.Load() }},
		{"fast loss", 1, func(r *rig) {
			r.push(0, 1, 2, 4) // one FIFO path past 3: lost
		}, func(s *Stats) uint64 { return s.HolesLost.Load() }},
		{"overflow", 2, func(r *rig) {
			r.push(0, 1, 2, 4)
			r.push(0, 3+16) // window 16: 3 must go (19 stays held)
		}, func(s *Stats) uint64 { return s.HolesOverflow.Load() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 16, tt.paths)
			tt.giveUp(r)
			r.expect(1, 2, 4)
			if got := tt.stat(&r.b.Stats); got == 0 {
				t.Fatal("hole 3 not given up the expected way")
			}
			if !r.b.Push(3, 0, 3, r.now) {
				t.Fatal("late packet of a given-up hole dropped")
			}
			r.expect(3)
			if r.b.Push(3, 0, 3, r.now) {
				t.Fatal("second copy of a late-delivered packet accepted")
			}
			r.expect()
			s := &r.b.Stats
			if s.LateDelivered.Load() != 1 || s.Late.Load() != 1 {
				t.Fatalf("late delivered %d late %d, want 1 1", s.LateDelivered.Load(), s.Late.Load())
			}
		})
	}
}

func TestLateDuplicateOfReleasedDropped(t *testing.T) {
	r := newRig(t, 16, 2)
	r.push(0, 1, 2, 3)
	r.expect(1, 2, 3)
	for _, s := range []uint32{1, 3, 2} {
		if r.b.Push(s, 1, s, r.now) {
			t.Fatalf("copy of released %d accepted", s)
		}
	}
	r.expect()
	if r.b.Stats.Late.Load() != 3 || r.b.Stats.LateDelivered.Load() != 0 {
		t.Fatalf("late %d late delivered %d", r.b.Stats.Late.Load(), r.b.Stats.LateDelivered.Load())
	}
}

// TestLateWindowEdge: a given-up hole exactly a window behind is still
// delivered; one further behind is out of the window (strict: dropped).
func TestLateWindowEdge(t *testing.T) {
	r := newRig(t, 16, 1)
	r.b.SetStrict(true)
	r.push(0, 1, 4) // 2 3 lost
	r.expect(1, 4)
	r.push(0, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18) // next 19
	r.expect(5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
	if r.b.Push(2, 0, 2, r.now) {
		t.Fatal("hole 17 behind a window of 16 delivered")
	}
	if !r.b.Push(3, 0, 3, r.now) {
		t.Fatal("hole exactly a window behind dropped")
	}
	r.expect(3)
	if s := &r.b.Stats; s.LateDelivered.Load() != 1 || s.OutOfWindow.Load() != 1 || s.Late.Load() != 0 {
		t.Fatalf("late delivered %d out of window %d late %d", s.LateDelivered.Load(), s.OutOfWindow.Load(), s.Late.Load())
	}
}

// TestLateBitNotStale: a sequence a bitset's length after a given-up hole,
// released as a packet, is not taken for the hole.
func TestLateBitNotStale(t *testing.T) {
	r := newRig(t, 64, 1)
	r.push(0, 1, 3) // 2 lost
	r.expect(1, 3)
	for s := uint32(4); s <= 2+64; s++ {
		r.push(0, s)
	}
	r.out = nil
	if r.b.Push(2+64, 0, 0, r.now) {
		t.Fatal("copy of a released packet delivered on a stale hole bit")
	}
	// And the reverse: a packet released, then a hole at the same bit.
	r.push(0, 2+128+1) // 2+128 lost (64 bits later than 2+64)
	r.out = nil
	if !r.b.Push(2+128, 0, 0, r.now) {
		t.Fatal("hole on a bit a packet used before not delivered")
	}
}

// TestLateAfterBigJump: holes skipped in one go (the window overflowed with
// nothing held) are each delivered once, across word boundaries.
func TestLateAfterBigJump(t *testing.T) {
	for _, tt := range []struct {
		name   string
		window int
		ahead  uint32
	}{
		{"word fill", 1024, 1023 + 300}, // skips 1..299
		{"whole bitset", 64, 1000},      // skips more than the bitset holds
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.window, 2)
			r.push(0, 0)
			r.push(0, tt.ahead)
			r.expect(0)
			next := r.b.next
			lo := next - uint32(tt.window)
			if int32(lo) < 1 {
				lo = 1
			}
			for s := lo; s < next; s++ {
				if !r.b.Push(s, 1, s, r.now) {
					t.Fatalf("skipped %d not delivered", s)
				}
				if r.b.Push(s, 1, s, r.now) {
					t.Fatalf("skipped %d delivered twice", s)
				}
			}
			n := uint64(next - lo)
			if s := &r.b.Stats; s.LateDelivered.Load() != n || s.Late.Load() != n {
				t.Fatalf("late delivered %d late %d, want %d %d", s.LateDelivered.Load(), s.Late.Load(), n, n)
			}
			if len(r.out) != int(n) {
				t.Fatalf("released %d, want %d", len(r.out), n)
			}
		})
	}
}

// TestLateAfterResetNotDelivered: holes of the stream before a Reset (or a
// Flush) are forgotten.
func TestLateAfterResetNotDelivered(t *testing.T) {
	for _, reset := range []bool{true, false} {
		r := newRig(t, 16, 1)
		r.push(0, 1, 3) // 2 lost
		r.expect(1, 3)
		if reset {
			r.b.Reset(r.now)
			r.push(0, 4, 5) // the new stream happens to start near the old one
			r.expect(4, 5)
		} else {
			r.b.Flush(r.now)
		}
		if r.b.Push(2, 0, 2, r.now) {
			t.Fatalf("reset %v: hole of the old stream delivered", reset)
		}
		r.expect()
		if r.b.Stats.LateDelivered.Load() != 0 || r.b.Stats.Late.Load() != 1 {
			t.Fatalf("reset %v: late delivered %d late %d", reset, r.b.Stats.LateDelivered.Load(), r.b.Stats.Late.Load())
		}
	}
}

func TestPushAllocs(t *testing.T) {
	for _, tt := range []struct {
		name  string
		paths int
	}{
		{"reordered", 2},
		{"late delivered", 1}, // one path: the swapped first of each pair is a hole given up, then delivered late
	} {
		t.Run(tt.name, func(t *testing.T) {
			buf, _ := New(Config{Window: 4096, Timeout: 50 * time.Millisecond, Paths: tt.paths}, func(uint32) {})
			seq := uint32(0)
			allocs := testing.AllocsPerRun(10000, func() {
				s := seq ^ 1
				buf.Push(s, 0, s, t0)
				seq++
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per Push", allocs)
			}
			if tt.paths == 1 && buf.Stats.LateDelivered.Load() == 0 {
				t.Fatal("late path not exercised")
			}
		})
	}
}

func BenchmarkPushLateDelivered(b *testing.B) {
	buf, _ := New(Config{Window: 4096, Timeout: 50 * time.Millisecond, Paths: 1}, func(uint32) {})
	b.ReportAllocs()
	seq := uint32(0)
	for b.Loop() {
		s := seq ^ 1 // one path: each even sequence is given up, then arrives
		buf.Push(s, 0, s, t0)
		seq++
	}
}

// FuzzPush checks the buffer against a model: every sequence is handed on
// at most once; a late packet is handed on exactly when its sequence was
// passed as a hole at most a window ago and not delivered since.
func FuzzPush(f *testing.F) {
	f.Add(uint32(0), []byte{1, 0, 5, 3, 200, 2, 9, 130})
	f.Add(uint32(0xfffffff0), []byte{3, 1, 2, 40, 0, 0, 7, 255, 6, 129, 1, 1})
	f.Fuzz(func(t *testing.T, start uint32, ops []byte) {
		const window = 8
		var out []uint32
		b, _ := New(Config{Window: window, Timeout: 50 * time.Millisecond, LossGrace: time.Millisecond, Paths: 2},
			func(s uint32) { out = append(out, s) })
		now := t0
		delivered := map[uint32]bool{}
		owed := map[uint32]bool{}
		pushed := map[uint32]bool{}
		b.Push(start, 0, start, now)
		pushed[start] = true
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i], ops[i+1]
			prev := b.next
			var seq uint32
			var late, expect, accepted bool
			switch op % 4 {
			case 0, 1: // push within [-window, 2*window) of next
				seq = b.next + uint32(int32(arg%(3*window))-window)
				late = int32(seq-b.next) < 0
				expect = late && owed[seq]
				accepted = b.Push(seq, int(op/4)%2, seq, now)
				if late && accepted != expect {
					t.Fatalf("late %d: accepted %v, owed %v", seq, accepted, expect)
				}
				if accepted {
					pushed[seq] = true
				}
			case 2:
				now = now.Add(time.Duration(arg) * time.Millisecond / 4)
				b.Expire(now)
			case 3:
				b.Watermark(int(arg)%2, b.next+uint32(arg%window), now)
			}
			for _, s := range out {
				if delivered[s] {
					t.Fatalf("%d handed on twice", s)
				}
				if !pushed[s] {
					t.Fatalf("%d handed on, never accepted", s)
				}
				delivered[s] = true
				delete(owed, s)
			}
			out = out[:0]
			for s := prev; s != b.next; s++ {
				if !delivered[s] {
					owed[s] = true
				}
			}
			for s := range owed {
				if b.next-s > window {
					delete(owed, s)
				}
			}
		}
	})
}
