package reorder

import (
	"slices"
	"testing"
	"time"
)

// repairRig is a rig with repair on: the sequences asked for are kept.
func repairRig(t *testing.T, paths int, wait time.Duration) (*rig, *[]uint32) {
	r := newRig(t, 64, paths)
	asked := &[]uint32{}
	r.b.SetRepair(wait, func(seq uint32) { *asked = append(*asked, seq) })
	return r, asked
}

// TestRepairHoldsAProvenLoss: a hole every path has moved past is asked
// for once and held for the repair wait; the re-sent packet arriving
// within it goes in order, and nothing counts as a hole.
func TestRepairHoldsAProvenLoss(t *testing.T) {
	r, asked := repairRig(t, 2, 20*time.Millisecond)
	r.push(0, 0)
	r.push(1, 2) // 1 lost on path 0 or 1: not yet known
	r.expect(0)
	if len(*asked) != 0 {
		t.Fatalf("asked for %v before the paths moved past it", *asked)
	}
	r.push(0, 3) // both paths are past 1: lost
	if !slices.Equal(*asked, []uint32{1}) {
		t.Fatalf("asked for %v, want [1]", *asked)
	}
	r.expect()
	if dl, ok := r.b.Deadline(); !ok || !dl.Equal(r.now.Add(20*time.Millisecond)) {
		t.Fatalf("deadline %v %v, want the repair wait's end", dl, ok)
	}
	r.push(1, 4)
	r.tick(10 * time.Millisecond)
	r.expect()
	r.push(1, 1) // the re-sent packet, on any path
	r.expect(1, 2, 3, 4)
	if !slices.Equal(*asked, []uint32{1}) {
		t.Fatalf("asked again: %v", *asked)
	}
	s := &r.b.Stats
	if s.Repaired.Load() != 1 || s.RepairAsked.Load() != 1 || s.Holes.Load() != 0 {
		t.Fatalf("repaired %d, asked %d, holes %d; want 1, 1, 0", s.Repaired.Load(), s.RepairAsked.Load(), s.Holes.Load())
	}
}

// TestRepairGivesUpAfterTheWait: a repair that does not come is given up at
// the wait's end, as a lost hole, and what was behind it goes on.
func TestRepairGivesUpAfterTheWait(t *testing.T) {
	r, _ := repairRig(t, 1, 20*time.Millisecond)
	r.push(0, 0, 2, 3)
	r.expect(0)
	r.tick(19 * time.Millisecond)
	r.expect()
	r.tick(time.Millisecond)
	r.expect(2, 3)
	if r.b.Stats.HolesLost.Load() != 1 || r.b.Stats.Repaired.Load() != 0 {
		t.Fatalf("lost %d, repaired %d", r.b.Stats.HolesLost.Load(), r.b.Stats.Repaired.Load())
	}
	r.push(0, 1) // too late: handed on out of order, not a repair
	r.expect(1)
	if r.b.Stats.LateDelivered.Load() != 1 || r.b.Stats.Repaired.Load() != 0 {
		t.Fatalf("late %d, repaired %d", r.b.Stats.LateDelivered.Load(), r.b.Stats.Repaired.Load())
	}
}

// TestRepairAsksEveryLostHoleAtOnce: holes behind the head hole that are
// proven lost are asked for together, not one round trip after another.
func TestRepairAsksEveryLostHoleAtOnce(t *testing.T) {
	r, asked := repairRig(t, 1, 20*time.Millisecond)
	r.push(0, 0, 2, 4, 7)
	if !slices.Equal(*asked, []uint32{1, 3, 5, 6}) {
		t.Fatalf("asked for %v, want [1 3 5 6]", *asked)
	}
	r.push(0, 8)
	if len(*asked) != 4 {
		t.Fatalf("asked again: %v", *asked)
	}
	r.tick(5 * time.Millisecond)
	r.push(0, 1, 3, 6)
	r.expect(0, 1, 2, 3, 4)
	r.tick(15 * time.Millisecond) // 5's wait is over: given up; 6 was repaired
	r.expect(6, 7, 8)
	if s := &r.b.Stats; s.Repaired.Load() != 3 || s.HolesLost.Load() != 1 {
		t.Fatalf("repaired %d, lost %d; want 3, 1", s.Repaired.Load(), s.HolesLost.Load())
	}
}

// TestRepairWaitBoundedByTimeout: the repair wait never outlasts the
// timeout, set before or after it; off, a proven loss goes at once.
func TestRepairWaitBoundedByTimeout(t *testing.T) {
	r, _ := repairRig(t, 1, time.Second) // the rig's timeout is 50 ms
	r.push(0, 0, 2)
	if dl, _ := r.b.Deadline(); !dl.Equal(r.now.Add(50 * time.Millisecond)) {
		t.Fatalf("deadline %v after now, want the 50 ms timeout", dl.Sub(r.now))
	}
	r.b.SetTimeout(30*time.Millisecond, r.now)
	if dl, _ := r.b.Deadline(); !dl.Equal(r.now.Add(30 * time.Millisecond)) {
		t.Fatalf("deadline %v after now, want the new 30 ms timeout", dl.Sub(r.now))
	}
	r.expect(0)
	r.b.SetRepair(0, nil)
	r.push(0, 4)
	r.expect(2, 4) // off: 1 and 3 are given up at once (no grace in this rig)
}
