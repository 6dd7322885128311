package director

import (
	"math/rand/v2"
	"testing"
)

// TestIndexModel: random adds and removals (the index kept near half
// full, where clusters are long and wrap around the end) agree with a map
// at every step; every key left is found, and removed ones are not.
func TestIndexModel(t *testing.T) {
	x := newIndex(func(c *Conn) Key { return c.Key })
	model := map[Key]*Conn{}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := 0; step < 200000; step++ {
		k := benchKey(rng.IntN(2000))
		if c := model[k]; c != nil {
			if rng.IntN(2) == 0 {
				x.del(c)
				delete(model, k)
			}
		} else if len(model) < 511 {
			c := &Conn{Key: k}
			x.put(c)
			model[k] = c
		}
		if got, want := x.get(k), model[k]; got != want {
			t.Fatalf("step %d: get(%v) = %p, want %p", step, k, got, want)
		}
		if x.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, x.len(), len(model))
		}
	}
	if len(x.slots) != 1024 {
		t.Fatalf("grew to %d slots with at most 511 entries", len(x.slots))
	}
	for k, c := range model {
		if x.get(k) != c {
			t.Fatalf("%v lost", k)
		}
	}
	n := 0
	x.each(func(*Conn) { n++ })
	if n != len(model) {
		t.Fatalf("each saw %d, want %d", n, len(model))
	}
	for i := 0; i < 3000; i++ { // growth keeps everything
		x.put(&Conn{Key: benchKey(10000 + i)})
	}
	for k, c := range model {
		if x.get(k) != c {
			t.Fatalf("%v lost in growth", k)
		}
	}
}
