//go:build ignore

// gen writes lte-synthetic.trace, a synthetic LTE-like trace in mahimahi's
// format: go run gen.go > lte-synthetic.trace
//
// The rate is a mean-reverting random walk in log space (a new value every
// 100 ms, reverting to about 6 Mbit/s), clamped to 5..40 Mbit/s, with a
// fade to 5 Mbit/s and a burst towards 40 Mbit/s thrown in now and then, as a
// moving phone sees; each millisecond then gets as many 1500-byte delivery
// opportunities as the rate has earned. The seed is fixed: the output is
// the same on every run.
package main

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
)

const (
	periodMs = 60000
	segMs    = 100
	minMbit  = 5.0
	maxMbit  = 40.0
	meanMbit = 6.0
)

func main() {
	rng := rand.New(rand.NewPCG(2026, 8))
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	logRate := math.Log(meanMbit)
	credit := 0.0 // opportunities earned, not yet given
	last := 0
	var rate float64
	for ms := 1; ms <= periodMs; ms++ {
		if (ms-1)%segMs == 0 {
			logRate += 0.15*(math.Log(meanMbit)-logRate) + 0.22*rng.NormFloat64()
			switch r := rng.Float64(); {
			case r < 0.02: // a fade: a cell edge, a tunnel
				logRate = math.Log(minMbit)
			case r < 0.035: // a burst: a free cell nearby
				logRate = math.Log(maxMbit * (0.8 + 0.2*rng.Float64()))
			}
			rate = math.Min(maxMbit, math.Max(minMbit, math.Exp(logRate)))
		}
		credit += rate * 1e6 / 1000 / (1500 * 8) // opportunities this ms
		for credit >= 1 {
			fmt.Fprintln(w, ms)
			credit--
			last = ms
		}
	}
	if last != periodMs { // the last line is the period
		fmt.Fprintln(w, periodMs)
	}
}
