package path

import "cmp"

// windowSlots is how many sub-windows a windowed filter splits its window
// into: the extreme it reports covers between (1 − 1/windowSlots) and one
// whole window of samples.
const windowSlots = 10

// windowed is the running extreme (maximum or minimum) of timed samples
// over a sliding window, in fixed memory: the window is cut into
// windowSlots sub-windows that each keep their own extreme, and a
// sub-window leaves once it started a window before the latest sample.
// Time is whatever the caller counts in (here ns), and only samples move
// it: with no new sample the value stays (BBR's filters work so, and a path
// whose feedback stops is a matter for failure detection, not for its
// estimate). WindowedMax and WindowedMin are its two kinds.
type windowed[T cmp.Ordered] struct {
	slots  [windowSlots + 1]windowSlot[T] // a ring; slots[head] takes new samples
	head   int
	used   int   // slots holding samples
	last   int64 // time of the latest sample
	window int64 // window of the latest sample
}

type windowSlot[T cmp.Ordered] struct {
	start int64 // time of the slot's first sample
	v     T     // the slot's extreme
}

// WindowedMax is the running maximum of timed samples over a sliding
// window (see windowed); the zero value is empty.
type WindowedMax[T cmp.Ordered] struct{ w windowed[T] }

// WindowedMin is the running minimum of timed samples over a sliding
// window (see windowed); the zero value is empty.
type WindowedMin[T cmp.Ordered] struct{ w windowed[T] }

// Update adds sample v taken at time t, for a window of the given length
// (it may change from sample to sample, e.g. with the RTT). Samples older
// than the latest are taken as of the latest.
func (m *WindowedMax[T]) Update(t int64, v T, window int64) { m.w.update(t, v, window, false) }
func (m *WindowedMin[T]) Update(t int64, v T, window int64) { m.w.update(t, v, window, true) }

// Value is the extreme of the samples in the window that ends at the latest
// sample; ok is false before the first sample.
func (m *WindowedMax[T]) Value() (v T, ok bool) { return m.w.value(false) }
func (m *WindowedMin[T]) Value() (v T, ok bool) { return m.w.value(true) }

// Reset empties the filter.
func (m *WindowedMax[T]) Reset() { m.w = windowed[T]{} }
func (m *WindowedMin[T]) Reset() { m.w = windowed[T]{} }

// better reports whether a is a more extreme sample than b.
func better[T cmp.Ordered](a, b T, min bool) bool {
	if min {
		return a < b
	}
	return a > b
}

func (w *windowed[T]) update(t int64, v T, window int64, min bool) {
	if window < windowSlots {
		window = windowSlots
	}
	if w.used > 0 && t < w.last {
		t = w.last
	}
	w.last, w.window = t, window
	if w.used > 0 {
		s := &w.slots[w.head]
		if t-s.start < window/windowSlots {
			if better(v, s.v, min) {
				s.v = v
			}
			return
		}
		w.head = (w.head + 1) % len(w.slots)
	}
	w.slots[w.head] = windowSlot[T]{start: t, v: v}
	if w.used < len(w.slots) {
		w.used++
	}
}

func (w *windowed[T]) value(min bool) (v T, ok bool) {
	if w.used == 0 {
		return v, false
	}
	v = w.slots[w.head].v
	for k := 1; k < w.used; k++ {
		s := &w.slots[(w.head-k+len(w.slots))%len(w.slots)]
		if w.last-s.start >= w.window {
			break // this and every older slot began a window ago
		}
		if better(s.v, v, min) {
			v = s.v
		}
	}
	return v, true
}
