package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tunbond/tunbond/lab/emulator"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// The UDP rows of `lab bond --udp FRACTION`: after the TCP rows, one paced
// UDP flow per method but MPTCP (a UDP flow has no subflows), at FRACTION of
// the sum of the link rates, in UDPDatagram-byte datagrams, for the run's
// duration (issue 8's goal: at 0.9, ≥ 89 % received and none out of order).

// UDPDatagram is the size of the UDP rows' datagrams (UDP payload).
const UDPDatagram = 1200

// UDPSuffix ends the method name of a UDP row: "tunbond-adaptive/udp".
const UDPSuffix = "/udp"

// UDPStats is a UDP row's own part of its BenchResult (nil in a TCP row);
// its fields appear in the row's JSON as the row's own.
type UDPStats struct {
	RateMbit    float64 `json:"udp_rate_mbit"` // what the sender offered
	Sent        uint64  `json:"udp_sent"`
	Received    uint64  `json:"udp_received"`
	ReceivedPct float64 `json:"udp_received_pct"`
	OutOfOrder  uint64  `json:"udp_out_of_order"` // arrived below the highest sequence number seen
	Duplicates  uint64  `json:"udp_duplicates,omitempty"`
	DelayP50Ms  float64 `json:"udp_delay_p50_ms"` // one-way, send to the kernel's arrival stamp
	DelayP99Ms  float64 `json:"udp_delay_p99_ms"`
	// RcvbufDrops were dropped by the receiving socket (this host's
	// receiver fell behind), Skipped not sent (the sender stalled for
	// over 50 ms): neither is the path's loss.
	RcvbufDrops uint64 `json:"udp_rcvbuf_drops,omitempty"`
	Skipped     uint64 `json:"udp_skipped,omitempty"`
}

// IsUDP reports whether the row is a UDP row. A TCP row's name may end in
// "/udp" too: that of tunbond's udp transport variant ("tunbond-rr/udp"),
// whose UDP row is "tunbond-rr/udp/udp".
func (r BenchResult) IsUDP() bool { return r.UDPStats != nil || r.udp }

// runUDPRows appends the UDP rows to rep (cfg.UDP > 0). Only the context's
// end is an error; a row that cannot be measured says why.
func runUDPRows(ctx context.Context, net *netns.Net, counters linkCounters, methods []method, cfg BenchConfig,
	weights []int64, params [][2]emulator.Params, rep *Report) error {
	sum := 0.0
	for _, p := range params {
		sum += p[0].RateBps
	}
	rate := cfg.UDP * sum
	for k, m := range methods {
		if m.mptcp {
			continue
		}
		name := m.name + UDPSuffix
		row := BenchResult{Method: name, Retransmits: -1, RTO: -1, udp: true}
		switch {
		case !allLimited(params):
			row.Skipped = "a link has no rate: the UDP rate is a fraction of their sum"
		case m.skipped != "":
			row.Skipped = m.skipped
		}
		if row.Skipped != "" {
			rep.Results = append(rep.Results, row)
			if cfg.Note != nil {
				cfg.Note(name + ": skipped: " + row.Skipped)
			}
			continue
		}
		if cfg.Progress != nil {
			cfg.Progress(name, time.Duration(len(methods)-k)*(cfg.Duration+traffic.UDPStragglers+time.Second))
		}
		bctx, cancel := context.WithTimeout(ctx, cfg.Duration+traffic.UDPStragglers+20*time.Second)
		r, err := runUDPMethod(bctx, net, counters, m, cfg, weights, rate)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("no result within %v", cfg.Duration+traffic.UDPStragglers+20*time.Second)
		}
		if err != nil {
			r = BenchResult{Method: name, Error: err.Error(), Retransmits: -1, RTO: -1}
			if cfg.Note != nil {
				cfg.Note(fmt.Sprintf("%s: %v", name, err))
			}
		}
		r.udp = true
		if m.sched != "" {
			r.Transport = m.variant.Name
		}
		rep.Results = append(rep.Results, r)
	}
	return nil
}

// runUDPMethod measures one method's UDP row at rate bit/s.
func runUDPMethod(ctx context.Context, net *netns.Net, counters linkCounters, m method, cfg BenchConfig, weights []int64, rate float64) (BenchResult, error) {
	row := BenchResult{Method: m.name + UDPSuffix, Retransmits: -1, RTO: -1}
	bond, stop, err := startMethodTunnel(ctx, net, m, cfg, weights)
	if err != nil {
		return row, err
	}
	defer stop()
	c0 := counters()
	r, err := traffic.UDPFlowFrom(ctx, m.src(net), m.dst(net), m.srcAddr, m.dstAddr, rate, UDPDatagram, cfg.Duration)
	if err != nil {
		return row, err
	}
	c1 := counters()
	bytes := make([]float64, len(c1))
	for i := range c1 {
		bytes[i] = float64(c1[i] - c0[i])
	}
	row.LinkShare = shares([][]float64{bytes}, len(weights))
	row.GoodputMbps = r.GoodputMbps
	row.UDPStats = &UDPStats{RateMbit: rate / 1e6, Sent: r.Sent, Received: r.Received, ReceivedPct: r.ReceivedPct,
		OutOfOrder: r.OutOfOrder, Duplicates: r.Duplicates, DelayP50Ms: ms(r.DelayP50), DelayP99Ms: ms(r.DelayP99),
		RcvbufDrops: r.RcvbufDrops, Skipped: r.Skipped}
	if bond != nil {
		row.Reorder = reorderSummary(bond)
	}
	return row, nil
}
