package lab

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"time"
)

// BenchConfig is a side-by-side throughput run on one set of uplinks.
type BenchConfig struct {
	RatesMbit  []float64 // per uplink; 0 means unshaped veth
	Duration   time.Duration
	Flows      int
	Schedulers []string // tunbond schedulers to measure
	Progress   func(phase string, left time.Duration)
	Log        *slog.Logger
}

// BenchResult is one method's row.
type BenchResult struct {
	Method      string    `json:"method"`
	GoodputMbps float64   `json:"goodput_mbps"`
	SumPct      float64   `json:"sum_pct,omitempty"` // % of the sum of the link rates (shaped links)
	VsBestLink  float64   `json:"vs_best_link"`
	Retransmits int64     `json:"retransmits"`
	CPUPct      float64   `json:"tunbond_cpu_pct,omitempty"` // tunbond's CPU, % of one core, both endpoints
	Reorder     *Reorder  `json:"reorder,omitempty"`
	PerSecond   []float64 `json:"per_second_mbps,omitempty"`
	Tool        string    `json:"tool"`
}

// Reorder summarises the receiving endpoint's reorder buffer over a run.
type Reorder struct {
	HolesLost    uint64 `json:"holes_lost"`
	HolesTimeout uint64 `json:"holes_timeout"`
	Late         uint64 `json:"late"`
}

// RunBondBench builds site A and site B joined by one veth per rate (TBF on
// both ends where the rate is set), then measures, in this order and on the
// same links: each uplink alone, and tunbond with each scheduler.
func RunBondBench(ctx context.Context, id string, cfg BenchConfig) ([]BenchResult, error) {
	n := len(cfg.RatesMbit)
	net, err := BondTopology(n).Build(id)
	if err != nil {
		return nil, err
	}
	defer net.Close()
	sum := 0.0
	for i, r := range cfg.RatesMbit {
		sum += r
		if r <= 0 {
			continue
		}
		for _, side := range []string{"a", "b"} {
			// tbf rate R burst 32kbit latency 50ms, both ways
			if err := ShapeTBF(net.NS(side), UplinkName(i), uint64(r*1e6), 4000, 0.05); err != nil {
				return nil, err
			}
		}
	}
	methods := n + len(cfg.Schedulers)
	left := func(done int) time.Duration { return time.Duration(methods-done) * (cfg.Duration + 2*time.Second) }
	progress := func(phase string, done int) {
		if cfg.Progress != nil {
			cfg.Progress(phase, left(done))
		}
	}
	var out []BenchResult
	best := 0.0
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("link-%d", i+1)
		progress(name, i)
		r, err := Throughput(ctx, net.NS("a"), net.NS("b"), uplinkAddr(i, 2), cfg.Duration, cfg.Flows)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		best = max(best, r.GoodputMbps)
		out = append(out, BenchResult{Method: name, GoodputMbps: r.GoodputMbps, Retransmits: r.Retransmits, PerSecond: r.PerSecond, Tool: r.Tool})
	}
	for k, sched := range cfg.Schedulers {
		name := "tunbond-" + sched
		progress(name, n+k)
		weights := make([]int64, n)
		for i, r := range cfg.RatesMbit {
			weights[i] = max(int64(r), 1)
			if r <= 0 {
				weights[i] = 1
			}
		}
		b, err := StartBondOn(ctx, net, BondSpec{Weights: weights, Scheduler: sched, Log: cfg.Log})
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		cpu0 := cpuTime()
		t0 := time.Now()
		r, err := Throughput(ctx, net.NS("a"), net.NS("b"), BondAddrB, cfg.Duration, cfg.Flows)
		wall := time.Since(t0)
		cpu := cpuTime() - cpu0
		rs := b.B.Engine().ReorderStats()
		b.Stop()
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		row := BenchResult{Method: name, GoodputMbps: r.GoodputMbps, Retransmits: r.Retransmits, PerSecond: r.PerSecond, Tool: r.Tool}
		if r.Tool == "iperf3" { // with the Go sender our process also runs the traffic
			row.CPUPct = 100 * cpu.Seconds() / wall.Seconds()
		}
		if rs != nil {
			row.Reorder = &Reorder{HolesLost: rs.HolesLost.Load(), HolesTimeout: rs.HolesTimeout.Load(), Late: rs.Late.Load()}
		}
		out = append(out, row)
	}
	for i := range out {
		if sum > 0 && allShaped(cfg.RatesMbit) {
			out[i].SumPct = 100 * out[i].GoodputMbps / sum
		}
		if best > 0 {
			out[i].VsBestLink = out[i].GoodputMbps / best
		}
	}
	return out, nil
}

func allShaped(rates []float64) bool {
	for _, r := range rates {
		if r <= 0 {
			return false
		}
	}
	return true
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
