package director

import "hash/maphash"

// connIndex finds a connection by its key: open addressing with linear
// probing, at most half full, and backward-shift deletion, so a removal
// leaves no tombstone behind. The table's churn under a flood (every new
// flow evicts an old one) filled Go's map with tombstones until a lookup
// that missed probed every group of its table: 1 µs a new flow, where
// this index costs a few cache misses. It grows by doubling (a pause of
// O(n) once per doubling); it does not shrink.
type connIndex struct {
	seed  maphash.Seed
	slots []indexSlot // len a power of two; c == nil: empty
	n     int
}

type indexSlot struct {
	hash uint64
	c    *Conn
}

func newConnIndex() connIndex {
	return connIndex{seed: maphash.MakeSeed(), slots: make([]indexSlot, 1024)}
}

func (x *connIndex) hash(k Key) uint64 { return maphash.Comparable(x.seed, k) }

func (x *connIndex) len() int { return x.n }

// get returns the connection of k, or nil.
func (x *connIndex) get(k Key) *Conn {
	h := x.hash(k)
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		s := &x.slots[i]
		if s.c == nil {
			return nil
		}
		if s.hash == h && s.c.Key == k {
			return s.c
		}
	}
}

// put adds c, whose key is not in the index.
func (x *connIndex) put(c *Conn) {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	x.place(indexSlot{x.hash(c.Key), c})
	x.n++
}

func (x *connIndex) place(s indexSlot) {
	mask := uint64(len(x.slots) - 1)
	i := s.hash & mask
	for x.slots[i].c != nil {
		i = (i + 1) & mask
	}
	x.slots[i] = s
}

func (x *connIndex) grow() {
	old := x.slots
	x.slots = make([]indexSlot, 2*len(old))
	for _, s := range old {
		if s.c != nil {
			x.place(s)
		}
	}
}

// del removes c (by identity) and shifts back the entries after it that
// probed past its slot, so every entry stays reachable from its home.
func (x *connIndex) del(c *Conn) {
	h := x.hash(c.Key)
	mask := uint64(len(x.slots) - 1)
	i := h & mask
	for x.slots[i].c != c {
		if x.slots[i].c == nil {
			return
		}
		i = (i + 1) & mask
	}
	for j := (i + 1) & mask; x.slots[j].c != nil; j = (j + 1) & mask {
		home := x.slots[j].hash & mask
		// j's entry may move to the hole at i unless its home lies in
		// (i, j] (cyclically): then the hole is before its home.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = indexSlot{}
	x.n--
}

// each calls f for every connection (in no order); f must not change the
// index.
func (x *connIndex) each(f func(c *Conn)) {
	for _, s := range x.slots {
		if s.c != nil {
			f(s.c)
		}
	}
}
