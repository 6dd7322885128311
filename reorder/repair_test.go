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

// TestRepairAcrossTheWrapAndWholeWindow: holes asked for across the uint32
// wrap, more of them than any fixed table would hold, are each held for
// their repair, and a wait cut by a lower timeout comes back with it.
func TestRepairAcrossTheWrapAndWholeWindow(t *testing.T) {
	r := &rig{t: t, now: t0}
	var err error
	r.b, err = New(Config{Window: 4096, Timeout: 50 * time.Millisecond, Paths: 1}, func(s uint32) { r.out = append(r.out, s) })
	if err != nil {
		t.Fatal(err)
	}
	var asked []uint32
	r.b.SetRepair(20*time.Millisecond, func(seq uint32) { asked = append(asked, seq) })
	const start = uint32(0xfffff000) // the wrap is 4096 sequences ahead
	r.push(0, start)
	for seq := start + 2; seq != start+4002; seq += 2 { // every other one lost: 2000 holes
		r.push(0, seq)
	}
	if len(asked) != 2000 || asked[0] != start+1 || asked[1999] != start+3999 {
		t.Fatalf("asked for %d holes (%#x..), want 2000 from %#x", len(asked), asked[0], start+1)
	}
	r.out = nil
	r.tick(10 * time.Millisecond)
	for seq := start + 1; seq != start+4001; seq += 2 {
		r.push(0, seq) // every repair, within its wait
	}
	if len(r.out) != 4000 || r.b.Stats.Repaired.Load() != 2000 || r.b.Stats.Holes.Load() != 0 {
		t.Fatalf("released %d, repaired %d, holes %d; want 4000, 2000, 0", len(r.out), r.b.Stats.Repaired.Load(), r.b.Stats.Holes.Load())
	}
	r.out = nil

	// A timeout below the wait bounds it; raised again, the wait is back.
	r.b.SetTimeout(5*time.Millisecond, r.now)
	r.b.SetTimeout(50*time.Millisecond, r.now)
	next := start + 4001
	r.push(0, next+1)
	if dl, _ := r.b.Deadline(); !dl.Equal(r.now.Add(20 * time.Millisecond)) {
		t.Fatalf("deadline %v after now, want the 20 ms repair wait back", dl.Sub(r.now))
	}

	// Off and on again: what went by while off is not asked for late.
	r.b.SetRepair(0, nil)
	r.tick(20 * time.Millisecond)
	r.expect(next + 1)
	asked = nil
	r.b.SetRepair(20*time.Millisecond, func(seq uint32) { asked = append(asked, seq) })
	r.push(0, next+3)
	if len(asked) != 1 || asked[0] != next+2 {
		t.Fatalf("asked for %x, want only %#x", asked, next+2)
	}
}
