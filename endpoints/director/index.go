package director

import "hash/maphash"

// index finds an entry (the table's connections, a persistent service's
// clients) by its key: open addressing with linear probing, at most half
// full, and backward-shift deletion, so a removal leaves no tombstone
// behind. Under a flood's churn (every new flow or client evicting an old
// one) Go's map filled with tombstones until a lookup that missed probed
// every group of its table: 1 µs a new flow, where this index costs a few
// cache misses. It grows by doubling (a pause of O(n) once per doubling);
// it does not shrink. Entries are pointers, and key reads an entry's key,
// which must not change while the entry is in the index.
type index[K comparable, E any] struct {
	seed  maphash.Seed
	key   func(*E) K
	slots []indexSlot[E] // len a power of two; e == nil: empty
	n     int
}

type indexSlot[E any] struct {
	hash uint64
	e    *E
}

func newIndex[K comparable, E any](key func(*E) K) index[K, E] {
	return index[K, E]{seed: maphash.MakeSeed(), key: key, slots: make([]indexSlot[E], 1024)}
}

func (x *index[K, E]) hash(k K) uint64 { return maphash.Comparable(x.seed, k) }

func (x *index[K, E]) len() int { return x.n }

// get returns the entry of k, or nil.
func (x *index[K, E]) get(k K) *E {
	h := x.hash(k)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.e == nil {
			return nil
		}
		if s.hash == h && x.key(s.e) == k {
			return s.e
		}
	}
}

// put adds e, whose key is not in the index.
func (x *index[K, E]) put(e *E) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	x.place(indexSlot[E]{x.hash(x.key(e)), e})
	x.n++
}

func (x *index[K, E]) place(s indexSlot[E]) {
	mask := uint64(len(x.slots) - 1)
	i := s.hash & mask
	for x.slots[i].e != nil {
		i = (i + 1) & mask
	}
	x.slots[i] = s
}

func (x *index[K, E]) grow() {
	old := x.slots
	x.slots = make([]indexSlot[E], 2*len(old))
	for _, s := range old {
		if s.e != nil {
			x.place(s)
		}
	}
}

// del removes e (by identity) and shifts back the entries after it that
// probed past its slot, so every entry stays reachable from its home.
func (x *index[K, E]) del(e *E) {
	h := x.hash(x.key(e))
	mask := uint64(len(x.slots) - 1)
	i := h & mask
	for x.slots[i].e != e {
		if x.slots[i].e == nil {
			return
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; x.slots[j].e != nil; j = (j + 1) & mask {
		home := x.slots[j].hash & mask
		// j's entry may move to the hole at i unless its home lies in
		// (i, j] (cyclically): then the hole is before its home.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = indexSlot[E]{}
	x.n--
}

// each calls f for every entry (in no order); f must not change the index.
func (x *index[K, E]) each(f func(*E)) {
	for _, s := range x.slots {
		if s.e != nil {
			f(s.e)
		}
	}
}
