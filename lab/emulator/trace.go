package emulator

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// TraceMTU is the bytes one delivery opportunity of a trace carries.
const TraceMTU = 1500

// Trace is a link replayed from a mahimahi trace: each entry is the
// millisecond (from the start) of one delivery opportunity of TraceMTU
// bytes, in order; the trace repeats with its last entry as the period.
type Trace struct {
	Name string
	Ms   []uint32
}

// ParseTrace reads mahimahi's format: one integer a line, non-decreasing,
// the last one > 0. Blank lines are skipped.
func ParseTrace(name string, b []byte) (*Trace, error) {
	t := &Trace{Name: name}
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		f := bytes.TrimSpace(sc.Bytes())
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseUint(string(f), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("trace %s line %d: %q is not a millisecond count", name, line, f)
		}
		if n := len(t.Ms); n > 0 && uint32(v) < t.Ms[n-1] {
			return nil, fmt.Errorf("trace %s line %d: %d goes back in time (after %d)", name, line, v, t.Ms[n-1])
		}
		t.Ms = append(t.Ms, uint32(v))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("trace %s: %w", name, err)
	}
	if len(t.Ms) == 0 || t.Ms[len(t.Ms)-1] == 0 {
		return nil, fmt.Errorf("trace %s: %w", name, errors.New("no delivery opportunity after 0 ms (the last line is the period)"))
	}
	return t, nil
}

// Period is the time after which the trace repeats.
func (t *Trace) Period() time.Duration {
	return time.Duration(t.Ms[len(t.Ms)-1]) * time.Millisecond
}

// MeanBps is the trace's mean rate in bits per second.
func (t *Trace) MeanBps() float64 {
	return float64(len(t.Ms)) * TraceMTU * 8 / t.Period().Seconds()
}

// oppAt is the time after the start of delivery opportunity k, counted
// over all repetitions.
func (t *Trace) oppAt(k int64) time.Duration {
	n := int64(len(t.Ms))
	return time.Duration(k/n)*t.Period() + time.Duration(t.Ms[k%n])*time.Millisecond
}

// firstAt is the first opportunity at or after d from the start.
func (t *Trace) firstAt(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	n := int64(len(t.Ms))
	p := t.Period()
	c := int64(d / p)
	r := d - time.Duration(c)*p
	if r == 0 && c > 0 {
		return c*n - 1 // the previous cycle's last one is at d
	}
	lo, hi := 0, len(t.Ms) // first i with Ms[i] ≥ r
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if time.Duration(t.Ms[m])*time.Millisecond < r {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return c*n + int64(lo)
}
