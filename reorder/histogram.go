package reorder

import (
	"sync/atomic"
	"time"
)

// WaitBuckets are the upper bounds of the wait histogram.
var WaitBuckets = []time.Duration{
	0, 100 * time.Microsecond, 500 * time.Microsecond, time.Millisecond, 2 * time.Millisecond,
	5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 200 * time.Millisecond, 500 * time.Millisecond,
}

// Histogram counts durations in WaitBuckets without locks or allocation.
type Histogram struct {
	counts [13]atomic.Uint64 // len(WaitBuckets)+1; the last is +Inf
	sumNs  atomic.Int64
	total  atomic.Uint64
}

// Observe adds one duration.
func (h *Histogram) Observe(d time.Duration) {
	i := 0
	for i < len(WaitBuckets) && d > WaitBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
	h.total.Add(1)
}

// Snapshot returns the cumulative bucket counts (by upper bound, in
// seconds), the count and the sum in seconds, as Prometheus wants them.
func (h *Histogram) Snapshot() (buckets map[float64]uint64, count uint64, sum float64) {
	buckets = make(map[float64]uint64, len(WaitBuckets))
	var cum uint64
	for i, ub := range WaitBuckets {
		cum += h.counts[i].Load()
		buckets[ub.Seconds()] = cum
	}
	return buckets, h.total.Load(), float64(h.sumNs.Load()) / 1e9
}

// Quantile returns the upper bound of the bucket that holds the q-quantile
// of the durations observed (0 < q ≤ 1), and false if there are none or it
// lies past the last bound (then the last bound is returned: at least that).
func (h *Histogram) Quantile(q float64) (time.Duration, bool) {
	total := h.total.Load()
	if total == 0 {
		return 0, false
	}
	want := uint64(q*float64(total) + 0.5)
	if want < 1 {
		want = 1
	}
	var cum uint64
	for i, ub := range WaitBuckets {
		if cum += h.counts[i].Load(); cum >= want {
			return ub, true
		}
	}
	return WaitBuckets[len(WaitBuckets)-1], false
}
