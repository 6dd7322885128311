package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tunbond/tunbond/lab/emulator"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// BenchConfig is one side-by-side run on one set of emulated uplinks.
type BenchConfig struct {
	Profile     *Profile
	Duration    time.Duration
	Flows       int
	Schedulers  []string                               // tunbond schedulers to measure
	NoBaselines bool                                   // measure tunbond only: no link-N, ecmp, mptcp or wireguard-go rows
	Progress    func(phase string, left time.Duration) // called as each method starts
	Note        func(msg string)                       // skipped methods and such
	Log         *slog.Logger
	// Transports are the variants each tunbond scheduler is measured in
	// (variants.go); none: the default variant (gre). With one, a row is
	// "tunbond-<sched>"; with several, "tunbond-<sched>/<variant>".
	Transports []Variant
	// Direct joins the sites with plain veths, no WAN namespace: each link is
	// shaped with TBF at its rate (`tbf rate R burst 32kbit latency 50ms` on
	// both ends), or not at all if it has none. Delay, jitter and loss need the
	// emulator and are refused. A profile with no shape at all (Unshaped)
	// always runs this way: there is nothing to emulate.
	Direct bool
	// Tool makes every TCP row's traffic: ToolGo ("": the same) or
	// ToolIperf3, which skips the MPTCP row without mptcpize.
	Tool string
	// CongestionControl is every row's inner TCP congestion control, set
	// per socket; "": site A's default (what iperf3 got before the choice).
	CongestionControl string
	dropProg          *dropProg // the blackholes' program, loaded once per run
	// Faults happen in every method's run at the same offsets from the
	// start of its measured interval (tool go only).
	Faults []Fault
	// UDP > 0 adds a UDP row per method but MPTCP after the TCP rows, at
	// this fraction of the sum of the link rates (udpbench.go).
	UDP float64

	keyFile string // the run's auth.key_file, when a variant needs one
	// only, if set, measures just the methods it names (tests).
	only map[string]bool
}

// Report is a whole run, in the shape `--json` writes.
type Report struct {
	Profile  string       `json:"profile"`
	Links    []LinkReport `json:"links"`
	Duration float64      `json:"duration_s"`
	Flows    int          `json:"flows"`
	Tool     string       `json:"tool"`
	// CongestionControl is the rows' inner TCP congestion control.
	CongestionControl string        `json:"congestion_control"`
	Results           []BenchResult `json:"results"`
	// Faults are the faults of every run (Fault.String), if any.
	Faults []string `json:"faults,omitempty"`
}

// LinkReport describes one emulated uplink.
type LinkReport struct {
	Name     string  `json:"name"`
	RateMbit float64 `json:"rate_mbit"`
	DelayMs  float64 `json:"delay_ms"`
	JitterMs float64 `json:"jitter_ms,omitempty"`
	LossPct  float64 `json:"loss_pct,omitempty"`
}

// BenchResult is one method's row.
type BenchResult struct {
	Method      string  `json:"method"`
	GoodputMbps float64 `json:"goodput_mbps"`
	SumPct      float64 `json:"sum_pct"`
	VsBestLink  float64 `json:"vs_best_link"`
	RTTP50Ms    float64 `json:"rtt_p50_ms"` // the sender's smoothed RTT while loaded (tool go), or ICMP probes (tool iperf3)
	RTTP99Ms    float64 `json:"rtt_p99_ms"`
	Retransmits int64   `json:"retransmits"` // TCP segments site A's kernel retransmitted (-1: unknown)
	// IdleRTTMs is the path's RTT before the flow: the fastest of 5 ICMP
	// echoes 20 ms apart, from the flow's source to its destination.
	IdleRTTMs float64 `json:"idle_rtt_ms"`
	// LatencyUnderLoadMs is RTTP99Ms minus IdleRTTMs: what the flow's
	// queueing (and reordering) adds to the idle path (0: no idle RTT).
	LatencyUnderLoadMs float64 `json:"latency_under_load_ms"`
	// LongestGapMs is the longest run of 100 ms bins in which the receiver
	// read nothing (tool go).
	LongestGapMs float64 `json:"longest_gap_ms"`
	// RTO is the retransmission timeouts of site A's kernel during the run
	// (TcpExt TCPTimeouts; -1: unknown).
	RTO int64 `json:"rto"`
	// RateDuringFaultMbps is the goodput from the first fault's start to
	// the last one's end; RateAfterFaultMbps from then to the run's end
	// (absent when no time is left after the faults).
	RateDuringFaultMbps *float64 `json:"rate_during_fault_mbps,omitempty"`
	RateAfterFaultMbps  *float64 `json:"rate_after_fault_mbps,omitempty"`
	// Transport is a tunbond row's transport variant (gre, udp+auth, ...).
	Transport string `json:"transport,omitempty"`
	// CPUPct is this process's CPU while the row's flow ran, less the Go
	// tool's own threads, in % of one core: the tunnel's, in the rows
	// whose tunnel runs in the process (tunbond and wireguard-go; with the
	// emulator, its forwarding counts too).
	CPUPct float64 `json:"tunbond_cpu_pct,omitempty"`
	// CPUSPerGbit is CPUPct per goodput: CPU seconds per Gbit carried.
	CPUSPerGbit float64     `json:"cpu_s_per_gbit,omitempty"`
	Reorder     *Reorder    `json:"reorder,omitempty"`
	Error       string      `json:"error,omitempty"`    // the method could not be measured
	Skipped     string      `json:"skipped,omitempty"`  // why the method was not measured (e.g. no mptcpize for iperf3)
	Subflows    int         `json:"subflows,omitempty"` // MPTCP: the most subflows the connection had (tool go)
	PerSecond   []float64   `json:"per_second_mbps"`
	LinkShare   []float64   `json:"link_share"`           // fraction of A→B bytes each uplink carried
	LinkPerSec  [][]float64 `json:"link_per_second_mbps"` // per second, per uplink, A→B

	*UDPStats // a UDP row's (udpbench.go); nil in a TCP row

	congestion string // what the flow's sender used
	udp        bool   // a UDP row (udpbench.go), measured or not
}

// Reorder summarises the receiving endpoint's reorder buffer over a run.
type Reorder struct {
	Released     uint64  `json:"released"`
	HolesLost    uint64  `json:"holes_lost"`
	HolesTimeout uint64  `json:"holes_timeout"`
	Late         uint64  `json:"late"`
	Spurious     uint64  `json:"spurious"`
	GraceMs      float64 `json:"loss_grace_ms"`
	RepairAsked  uint64  `json:"repair_asked"` // lost packets site B asked for again
	Repaired     uint64  `json:"repaired"`     // ... whose packet came in time to go in order
	// WaitP99Ms is the p99 of the time packets waited in site B's reorder
	// buffer, as the upper bound of its histogram bucket (0, .1, .5, 1, 2,
	// 5, 10, 20, 50, 100, 200, 500 ms); WaitP99Past: past the last bound.
	WaitP99Ms   float64 `json:"wait_p99_ms"`
	WaitP99Past bool    `json:"wait_p99_past_last_bucket,omitempty"`
}

// reorderSummary is what site B's reorder buffer did over a run; nil with
// IPIP.
func reorderSummary(b *Bond) *Reorder {
	rs := b.B.Engine().ReorderStats()
	if rs == nil {
		return nil
	}
	p99, in := rs.Wait.Quantile(0.99)
	return &Reorder{Released: rs.Released.Load(), HolesLost: rs.HolesLost.Load(),
		HolesTimeout: rs.HolesTimeout.Load(), Late: rs.Late.Load(), Spurious: rs.Spurious.Load(),
		GraceMs: float64(rs.GraceNs.Load()) / 1e6, RepairAsked: rs.RepairAsked.Load(), Repaired: rs.Repaired.Load(),
		WaitP99Ms: float64(p99) / 1e6, WaitP99Past: !in && p99 > 0}
}

// Addresses of the ECMP method: a /32 on each site's lo, routed over all uplinks.
const (
	ecmpAddrA = "10.88.0.1"
	ecmpAddrB = "10.88.0.2"
)

type method struct {
	name             string
	srcAddr, dstAddr string // for the flow and the RTT probes
	srcNS, dstNS     string // where the flow runs; "": site A to site B
	mptcp            bool
	sched            string  // tunbond scheduler
	variant          Variant // tunbond transport variant
	wireguard        bool    // the wireguard-go baseline
	skipped          string  // why it is not measured
}

// inProcess reports whether the method's tunnel runs in this process (its
// CPU is measured).
func (m method) inProcess() bool { return m.sched != "" || m.wireguard }

// RunBondBench builds site A — WAN — site B with the profile's emulated
// uplinks and measures, on the same links in one run: each uplink alone,
// ECMP over all uplinks, MPTCP over all uplinks (when the kernel has it),
// and tunbond with each scheduler.
func RunBondBench(ctx context.Context, id string, cfg BenchConfig) (*Report, error) {
	p := cfg.Profile
	n := len(p.Links)
	if cfg.Tool == "" {
		cfg.Tool = traffic.ToolGo
	}
	if p.Unshaped() {
		cfg.Direct = true
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports, _ = ParseVariants("")
	}
	if err := traffic.ToolCanRun(cfg.Tool, false); err != nil {
		return nil, err
	}
	rep := &Report{Profile: p.Name, Duration: cfg.Duration.Seconds(), Flows: max(cfg.Flows, 1), Tool: cfg.Tool}
	if len(cfg.Faults) > 0 {
		if cfg.Tool != traffic.ToolGo {
			return nil, errors.New("faults need the built-in Go tool: its receiver gives the 100 ms bins and the clock the faults keep")
		}
		if err := checkFaults(cfg.Faults, n, cfg.Duration); err != nil {
			return nil, err
		}
		for _, f := range cfg.Faults {
			rep.Faults = append(rep.Faults, f.String())
			if f.Kind == FaultBlackhole && cfg.dropProg == nil {
				prog, err := loadDropProg()
				if err != nil {
					return nil, err
				}
				defer prog.Close()
				cfg.dropProg = prog
			}
		}
	}
	params := make([][2]emulator.Params, n)
	sumRate := 0.0
	for i, l := range p.Links {
		pp, err := l.Params()
		if err != nil {
			return nil, err
		}
		params[i] = pp
		sumRate += pp[0].RateBps / 1e6
		rep.Links = append(rep.Links, LinkReport{Name: l.Name, RateMbit: pp[0].RateBps / 1e6,
			DelayMs: ms(pp[0].Delay), JitterMs: ms(pp[0].Jitter), LossPct: 100 * pp[0].Loss})
	}
	var net *netns.Net
	var counters linkCounters
	restart := func() {} // the emulator's, when there is one
	var err error
	if cfg.Direct {
		for i, pp := range params {
			if pp[0].Delay > 0 || pp[0].Jitter > 0 || pp[0].Loss > 0 || pp[0].GE != nil || pp[0] != pp[1] {
				return nil, fmt.Errorf("links[%d]: --direct links have only a rate (TBF, both ways); delay, jitter and loss need the emulator", i)
			}
		}
		if net, err = withLANs(netns.Sites(n), cfg.Transports).Build(id); err != nil {
			return nil, err
		}
		defer net.Close()
		for i, pp := range params {
			if pp[0].RateBps == 0 {
				continue
			}
			for _, side := range []string{"a", "b"} {
				if err := netns.ShapeTBF(net.NS(side), netns.UplinkName(i), uint64(pp[0].RateBps), 4000, 0.05); err != nil {
					return nil, err
				}
			}
		}
		counters = vethCounters(net, n)
	} else {
		if net, err = withLANs(emulator.WANTopology(n), cfg.Transports).Build(id); err != nil {
			return nil, err
		}
		defer net.Close()
		emu, err := emulator.StartWAN(net, params)
		if err != nil {
			return nil, err
		}
		defer emu.Close()
		counters = emu.BytesAB
		restart = emu.Restart
	}
	// Each method's connections must start afresh: Linux caches a
	// destination's ssthresh and RTT from the last connection to it, and
	// the tunbond methods share one destination (as link-1 and MPTCP do).
	for _, side := range []string{"a", "b", netns.LANHost(1), netns.LANHost(2)} {
		if net.NS(side) == nil {
			continue // no LAN hosts: no l2 variant
		}
		if err := net.NS(side).Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/tcp_no_metrics_save", []byte("1"), 0o644)
		}); err != nil {
			return nil, fmt.Errorf("tcp_no_metrics_save: %w", err)
		}
	}
	if rep.CongestionControl, err = traffic.ProbeCongestion(net.NS("a"), cfg.CongestionControl); err != nil {
		return nil, err
	}
	if err := setupECMP(net, n); err != nil {
		return nil, err
	}
	methods := []method{}
	for i := 0; i < n && !cfg.NoBaselines; i++ {
		methods = append(methods, method{name: fmt.Sprintf("link-%d", i+1), dstAddr: netns.UplinkAddr(i, 2)})
	}
	if !cfg.NoBaselines {
		methods = append(methods, method{name: "ecmp", srcAddr: ecmpAddrA, dstAddr: ecmpAddrB})
	}
	mptcp := method{name: "mptcp", dstAddr: netns.UplinkAddr(0, 2), mptcp: true}
	if err := traffic.ToolCanRun(cfg.Tool, true); err != nil {
		mptcp.skipped = err.Error()
	} else if err := netns.SetupMPTCP(net, n); err != nil {
		mptcp.skipped = err.Error()
	}
	if !cfg.NoBaselines {
		methods = append(methods, mptcp, method{name: "wireguard-go", dstAddr: WireGuardAddrB, wireguard: true})
	}
	for _, s := range cfg.Schedulers {
		for _, v := range cfg.Transports {
			name := "tunbond-" + s
			if len(cfg.Transports) > 1 {
				name += "/" + v.Name
			}
			m := method{name: name, dstAddr: BondAddrB, sched: s, variant: v}
			if v.L2 {
				m.srcNS, m.dstNS, m.dstAddr = netns.LANHost(1), netns.LANHost(2), netns.LANAddr(2)
			}
			methods = append(methods, m)
		}
	}
	if cfg.only != nil {
		var keep []method
		for _, m := range methods {
			if cfg.only[m.name] {
				keep = append(keep, m)
			}
		}
		methods = keep
	}
	for _, m := range methods {
		if m.variant.Auth && cfg.keyFile == "" {
			key, remove, err := writeRunKey()
			if err != nil {
				return nil, err
			}
			defer remove()
			cfg.keyFile = key
		}
	}
	weights := make([]int64, n)
	for i, l := range p.Links {
		weights[i] = max(int64(l.RateMbit()), 1)
	}
	for k, m := range methods {
		if m.skipped != "" {
			rep.Results = append(rep.Results, BenchResult{Method: m.name, Skipped: m.skipped, Retransmits: -1, RTO: -1})
			if cfg.Note != nil {
				cfg.Note(m.name + ": skipped: " + m.skipped)
			}
			continue
		}
		if cfg.Progress != nil {
			cfg.Progress(m.name, time.Duration(len(methods)-k)*(cfg.Duration+3*time.Second))
		}
		restart() // a schedule or trace starts again: every method meets the same links
		r, err := runMethodBounded(ctx, net, counters, m, cfg, weights)
		if err == nil && r.congestion != rep.CongestionControl {
			err = fmt.Errorf("the flow used congestion control %s, not %s", r.congestion, rep.CongestionControl)
		}
		if err != nil && ctx.Err() == nil && cfg.Note != nil {
			cfg.Note(fmt.Sprintf("%s: %v; measuring again", m.name, err))
		}
		if err != nil && ctx.Err() == nil {
			r, err = runMethodBounded(ctx, net, counters, m, cfg, weights)
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		if err != nil {
			r = BenchResult{Method: m.name, Error: err.Error(), Retransmits: -1, RTO: -1}
			if cfg.Note != nil {
				cfg.Note(fmt.Sprintf("%s: %v", m.name, err))
			}
		}
		if m.sched != "" {
			r.Transport = m.variant.Name
		}
		rep.Results = append(rep.Results, r)
	}
	if cfg.UDP > 0 {
		if err := runUDPRows(ctx, net, counters, methods, cfg, weights, params, rep); err != nil {
			return rep, err
		}
	}
	best := 0.0
	for _, r := range rep.Results {
		if isLinkRow(r.Method, n) { // the links alone
			best = max(best, r.GoodputMbps)
		}
	}
	for i := range rep.Results {
		if sumRate > 0 && allLimited(params) {
			rep.Results[i].SumPct = 100 * rep.Results[i].GoodputMbps / sumRate
		}
		if best > 0 {
			rep.Results[i].VsBestLink = rep.Results[i].GoodputMbps / best
		}
	}
	return rep, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// isLinkRow reports whether a row is the TCP row of one of the n links alone.
func isLinkRow(name string, n int) bool {
	for i := 0; i < n; i++ {
		if name == fmt.Sprintf("link-%d", i+1) {
			return true
		}
	}
	return false
}

// runMethodBounded runs a method with a deadline: a tool that hangs (it
// happens to iperf3 over MPTCP now and then) must not stall the run.
func runMethodBounded(ctx context.Context, net *netns.Net, counters linkCounters, m method, cfg BenchConfig, weights []int64) (BenchResult, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+20*time.Second)
	defer cancel()
	r, err := runMethod(ctx, net, counters, m, cfg, weights)
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("no result within %v", cfg.Duration+20*time.Second)
	}
	return r, err
}

// startMethodBond starts the bond a tunbond method runs through (nil for
// the others), with the user's defaults and the method's scheduler and
// transport variant.
func startMethodBond(ctx context.Context, net *netns.Net, m method, cfg BenchConfig, weights []int64) (*Bond, error) {
	if m.sched == "" {
		return nil, nil
	}
	bctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	spec := BondSpec{Weights: weights, Scheduler: m.sched, Log: cfg.Log, Transport: m.variant.Transport, Encrypt: m.variant.Encrypt}
	if m.variant.L2 {
		spec.Mode = "l2"
	}
	if m.variant.Auth {
		spec.KeyFile = cfg.keyFile
	}
	return StartBondOn(bctx, net, spec)
}

// startMethodTunnel starts the tunnel a method runs through: the bond of a
// tunbond method, the devices of wireguard-go; stop (never nil) ends it.
func startMethodTunnel(ctx context.Context, net *netns.Net, m method, cfg BenchConfig, weights []int64) (bond *Bond, stop func(), err error) {
	if m.wireguard {
		wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		wg, err := StartWireGuard(wctx, net, cfg.Log)
		if err != nil {
			if wg != nil {
				wg.Close()
			}
			return nil, nil, err
		}
		return nil, wg.Close, nil
	}
	bond, err = startMethodBond(ctx, net, m, cfg, weights)
	if err != nil || bond == nil {
		return nil, func() {}, err
	}
	return bond, func() { bond.Stop() }, nil
}

// cpuPerGbit is CPU seconds per Gbit carried: cores busy per Gbit/s.
func cpuPerGbit(cpuPct, goodputMbps float64) float64 {
	if cpuPct <= 0 || goodputMbps <= 0 {
		return 0
	}
	return (cpuPct / 100) / (goodputMbps / 1000)
}

// runMethod measures one method: the flow, RTT probes through the same path
// while it is loaded (10 a second), and each uplink's bytes every second.
func runMethod(ctx context.Context, net *netns.Net, counters linkCounters, m method, cfg BenchConfig, weights []int64) (BenchResult, error) {
	row := BenchResult{Method: m.name}
	bond, stop, err := startMethodTunnel(ctx, net, m, cfg, weights)
	if err != nil {
		return row, err
	}
	defer stop()
	mctx, cancel := context.WithCancel(ctx)
	defer cancel()
	probeSrc := m.srcAddr
	if probeSrc == "" {
		probeSrc = "0.0.0.0"
	}
	rttc := make(chan []time.Duration, 1)
	if cfg.Tool == traffic.ToolGo {
		rttc <- nil // the flow's own sender samples its RTT
	} else {
		go func() {
			// ICMP probes, from the end of the warm-up second to the end of the flow.
			select {
			case <-time.After(traffic.WarmUp):
			case <-mctx.Done():
				rttc <- nil
				return
			}
			count := int(cfg.Duration / traffic.RTTEvery)
			r, _ := traffic.PingFrom(mctx, m.src(net), probeSrc, m.dstAddr, count, traffic.RTTEvery)
			rttc <- r
		}()
	}
	idle, err := idleRTT(ctx, m.src(net), probeSrc, m.dstAddr)
	if err != nil {
		return row, err
	}
	row.IdleRTTMs = ms(idle)
	flow := traffic.Flow{Src: m.src(net), Dst: m.dst(net), SrcAddr: m.srcAddr, DstAddr: m.dstAddr,
		Duration: cfg.Duration, Flows: cfg.Flows, MPTCP: m.mptcp, Tool: cfg.Tool, CongestionControl: cfg.CongestionControl}
	faultc := make(chan error, 1)
	if len(cfg.Faults) > 0 {
		t0c := make(chan time.Time, 1)
		flow.Measuring = func(t0 time.Time) { t0c <- t0 }
		fs := &faults{net: net, prog: cfg.dropProg, list: cfg.Faults}
		go func() { faultc <- fs.Run(mctx, t0c) }()
	} else {
		faultc <- nil
	}
	samples := make(chan [][]float64, 1)
	go func() { samples <- sampleLinks(mctx, counters, cfg.Duration) }()
	re0, reErr := traffic.RetransSegs(m.src(net))
	rto0, rtoErr := traffic.TCPTimeouts(m.src(net))
	cpu0, t0 := cpuTime(), time.Now()
	fr, err := traffic.Throughput(mctx, flow)
	cpu, wall := cpuTime()-cpu0, time.Since(t0)
	cancel()
	ferr := <-faultc // every fault undone
	rtts := <-rttc
	row.LinkPerSec = <-samples
	if err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return row, err
	}
	row.GoodputMbps, row.Retransmits, row.RTO, row.PerSecond = fr.GoodputMbps, -1, -1, fr.PerSecond
	if re1, err := traffic.RetransSegs(m.src(net)); err == nil && reErr == nil {
		row.Retransmits = re1 - re0 // the sender's, counted by its kernel
	}
	if rto1, err := traffic.TCPTimeouts(m.src(net)); err == nil && rtoErr == nil {
		row.RTO = rto1 - rto0
	}
	if len(fr.RTTs) > 0 {
		rtts = fr.RTTs
	}
	row.RTTP50Ms, row.RTTP99Ms = percentiles(rtts)
	if row.IdleRTTMs > 0 && row.RTTP99Ms > 0 {
		row.LatencyUnderLoadMs = row.RTTP99Ms - row.IdleRTTMs
	}
	row.LongestGapMs = ms(longestGap(fr.Bins))
	if len(cfg.Faults) > 0 {
		from, to := faultWindow(cfg.Faults, cfg.Duration)
		if r, ok := binRate(fr.Bins, from, to); ok {
			row.RateDuringFaultMbps = &r
		}
		if r, ok := binRate(fr.Bins, to, cfg.Duration); ok {
			row.RateAfterFaultMbps = &r
		}
	}
	row.LinkShare = shares(row.LinkPerSec, len(weights))
	row.congestion = fr.CongestionControl
	if m.mptcp && fr.Tool == traffic.ToolGo {
		row.Subflows = fr.Subflows
		if links := len(weights); fr.Subflows < links {
			return row, fmt.Errorf("the MPTCP connection had %d subflow(s), want one per uplink (%d)", fr.Subflows, links)
		}
	}
	if m.inProcess() {
		// The process runs the tunnel, the emulator and the Go tool's
		// threads: the tool's own CPU time is not the tunnel's.
		row.CPUPct = 100 * (cpu - fr.ToolCPU).Seconds() / wall.Seconds()
		row.CPUSPerGbit = cpuPerGbit(row.CPUPct, row.GoodputMbps)
	}
	if bond != nil {
		row.Reorder = reorderSummary(bond)
	}
	return row, nil
}

// idleRTT is the idle path's RTT from src to dst: the fastest of 5 ICMP
// echoes 20 ms apart (the fastest, so a first echo that waits for ARP or a
// path that is still coming up does not count).
func idleRTT(ctx context.Context, ns *netns.Namespace, src, dst string) (time.Duration, error) {
	rtts, err := traffic.PingFrom(ctx, ns, src, dst, 5, 20*time.Millisecond)
	if err != nil {
		return 0, fmt.Errorf("idle RTT: %w", err)
	}
	var best time.Duration
	for _, r := range rtts {
		if r > 0 && (best == 0 || r < best) {
			best = r
		}
	}
	return best, nil
}

// longestGap is the longest run of empty bins (traffic.BinEvery each).
func longestGap(bins []int64) time.Duration {
	run, longest := 0, 0
	for _, b := range bins {
		if b == 0 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return time.Duration(longest) * traffic.BinEvery
}

// binRate is the mean goodput, Mbit/s, of the bins within [from, to) of the
// measured interval; false if none is.
func binRate(bins []int64, from, to time.Duration) (float64, bool) {
	var sum int64
	n := 0
	for k, b := range bins {
		if at := time.Duration(k) * traffic.BinEvery; at >= from && at+traffic.BinEvery <= to {
			sum += b
			n++
		}
	}
	if n == 0 {
		return 0, false
	}
	return float64(sum) * 8 / (float64(n) * traffic.BinEvery.Seconds()) / 1e6, true
}

// linkCounters reads the A→B bytes each uplink has carried so far.
type linkCounters func() []uint64

// vethCounters reads site A's uplink veths' transmitted bytes.
func vethCounters(n *netns.Net, links int) linkCounters {
	return func() []uint64 { return netns.UplinkTxBytes(n, links) }
}

func allLimited(params [][2]emulator.Params) bool {
	for _, p := range params {
		if p[0].RateBps == 0 {
			return false
		}
	}
	return true
}

// sampleLinks reads each uplink's A→B byte counter every second, after the
// warm-up second, for d.
func sampleLinks(ctx context.Context, read linkCounters, d time.Duration) [][]float64 {
	select {
	case <-time.After(time.Second):
	case <-ctx.Done():
		return nil
	}
	var out [][]float64
	prev := read()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for len(out) < int(d/time.Second) {
		select {
		case <-t.C:
		case <-ctx.Done():
			return out
		}
		cur := read()
		row := make([]float64, len(cur))
		for i := range cur {
			row[i] = float64(cur[i]-prev[i]) * 8 / 1e6
		}
		out = append(out, row)
		prev = cur
	}
	return out
}

func shares(perSec [][]float64, n int) []float64 {
	tot := make([]float64, n)
	sum := 0.0
	for _, row := range perSec {
		for i, v := range row {
			tot[i] += v
			sum += v
		}
	}
	if sum > 0 {
		for i := range tot {
			tot[i] /= sum
		}
	}
	return tot
}

func percentiles(rtts []time.Duration) (p50, p99 float64) {
	var v []float64
	for _, r := range rtts {
		if r > 0 {
			v = append(v, ms(r))
		}
	}
	if len(v) == 0 {
		return 0, 0
	}
	sort.Float64s(v)
	return v[len(v)/2], v[min(len(v)-1, len(v)*99/100)]
}

// setupECMP puts a /32 on each site's lo and routes it over every uplink
// with one multipath route, hashing flows by their 5-tuple.
func setupECMP(n *netns.Net, links int) error {
	for _, side := range []struct {
		ns, local, remote string
		peer              int
	}{{"a", ecmpAddrA, ecmpAddrB, 2}, {"b", ecmpAddrB, ecmpAddrA, 1}} {
		ns := n.NS(side.ns)
		lo, err := ns.NL.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(side.local + "/32")
		if err := ns.NL.AddrAdd(lo, a); err != nil {
			return fmt.Errorf("ecmp: %w", err)
		}
		rt := &netlink.Route{Dst: &net.IPNet{IP: net.ParseIP(side.remote).To4(), Mask: net.CIDRMask(32, 32)}}
		for i := 0; i < links; i++ {
			l, err := ns.NL.LinkByName(netns.UplinkName(i))
			if err != nil {
				return err
			}
			rt.MultiPath = append(rt.MultiPath, &netlink.NexthopInfo{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(netns.UplinkAddr(i, side.peer))})
		}
		if err := ns.NL.RouteAdd(rt); err != nil {
			return fmt.Errorf("ecmp: multipath route: %w", err)
		}
		if err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv4/fib_multipath_hash_policy", []byte("1"), 0o644)
		}); err != nil {
			return fmt.Errorf("ecmp: hash policy: %w", err)
		}
	}
	return nil
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// src and dst are the namespaces the method's flow runs between.
func (m method) src(net *netns.Net) *netns.Namespace { return net.NS(cmp.Or(m.srcNS, "a")) }
func (m method) dst(net *netns.Net) *netns.Namespace { return net.NS(cmp.Or(m.dstNS, "b")) }

// withLANs adds the LAN hosts behind the sites (mode l2) when a variant
// needs them.
func withLANs(t netns.Topology, variants []Variant) netns.Topology {
	for _, v := range variants {
		if v.L2 {
			return netns.WithLANs(t)
		}
	}
	return t
}
