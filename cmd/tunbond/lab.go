package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
	"github.com/tunbond/tunbond/scheduler/path"

	"github.com/spf13/pflag"

	"github.com/tunbond/tunbond/lab"
)

const labUsage = `usage: tunbond lab bond [--profile NAME | --links SPEC] [--duration 10s] [--flows 1] [--tool go|iperf3] [--cc NAME] [--fault SPEC]... [--udp FRACTION] [--transports gre,udp+auth] [--json FILE] [--plot FILE.svg]
       tunbond lab director [--reals 3] [--scheduler rr] [--requests 3000] [--clients 16] [--body 262144] [--duration 10s] [--ingress tun,ring] [--json FILE]`

func runLab(args []string) error {
	if len(args) > 0 && args[0] == "director" {
		return runLabDirector(args[1:])
	}
	if len(args) == 0 || args[0] != "bond" {
		return errors.New("lab: " + labUsage)
	}
	fs := pflag.NewFlagSet("lab bond", pflag.ContinueOnError)
	profile := fs.String("profile", "symmetric", "built-in link profile: "+strings.Join(lab.Profiles(), ", ")+` ("unshaped": no rate, delay or loss, always on plain veths as with --direct)`)
	links := fs.String("links", "", `ad hoc links instead of a profile: "100mbit/10ms,50mbit/40ms/1%/±5ms"`)
	duration := fs.Duration("duration", 10*time.Second, "measured time per method")
	flows := fs.Int("flows", 1, "parallel TCP flows")
	tool := fs.String("tool", traffic.ToolGo, "traffic tool of every TCP row: go (built in; opens MPTCP natively) or iperf3 (MPTCP through mptcpize, or that row is skipped)")
	cc := fs.String("cc", "", "inner TCP congestion control of every row, set per socket (e.g. cubic, bbr, reno); default: the kernel's default")
	faultSpecs := fs.StringArray("fault", nil, "a fault in every method's run, at offsets from the measured start (repeatable or comma-separated): blackhole:link1@8s-16s (drop all arriving on uplink 1, carrier kept), down:link2@8s[-12s] (uplink 2 down)")
	scheds := fs.String("schedulers", strings.Join(path.Names, ","), "tunbond schedulers to measure")
	transports := fs.String("transports", lab.DefaultVariant, "transport variants each tunbond scheduler is measured in (rows \"tunbond-<scheduler>/<variant>\" when more than one): "+
		strings.Join(lab.Variants, ", ")+"; auth uses a fresh key per run, encrypt implies auth")
	udp := fs.Float64("udp", 0, "after the TCP rows, one UDP row per method but mptcp (\"<method>/udp\"): a paced flow of 1200-byte datagrams at FRACTION of the sum of the link rates (e.g. 0.9), received %, out of order, one-way delay; 0: none")
	noBase := fs.Bool("no-baselines", false, "measure tunbond only (no link-N, ecmp, mptcp, wireguard-go rows; the ratios to them are then not reported)")
	jsonOut := fs.String("json", "", "write the results as JSON to FILE")
	plotOut := fs.String("plot", "", "draw goodput over time and uplink shares to FILE (.svg)")
	direct := fs.Bool("direct", false, "join the sites with plain veths shaped by TBF at the link rates (no WAN emulator: rates only); implied when no link has a rate, delay or loss (--profile unshaped)")
	debug := fs.Bool("debug", false, "log the endpoints")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to FILE")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var p *lab.Profile
	var err error
	if *links != "" {
		p, err = lab.ParseLinks(*links)
	} else {
		p, err = lab.LoadProfile(*profile)
	}
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if *duration < 2*time.Second {
		return errors.New("lab: --duration must be at least 2s")
	}
	if err := traffic.ToolCanRun(*tool, false); err != nil {
		return fmt.Errorf("lab: --tool: %w", err)
	}
	faults, err := lab.ParseFaults(*faultSpecs)
	if err != nil {
		return fmt.Errorf("lab: --fault: %w", err)
	}
	if len(faults) > 0 && *tool != traffic.ToolGo {
		return errors.New("lab: --fault needs --tool go (its receiver gives the 100 ms bins)")
	}
	if *udp < 0 || *udp > 2 {
		return errors.New("lab: --udp is a fraction of the sum of the link rates, 0 (off) to 2")
	}
	if *udp > 0 {
		for i, l := range p.Links {
			if l.RateMbit() <= 0 {
				return fmt.Errorf("lab: --udp: links[%d] has no rate, and the UDP rate is a fraction of their sum", i)
			}
		}
	}
	if *plotOut != "" && !strings.HasSuffix(*plotOut, ".svg") {
		return errors.New("lab: --plot writes SVG: name the file .svg")
	}
	variants, err := lab.ParseVariants(*transports)
	if err != nil {
		return fmt.Errorf("lab: --transports: %w", err)
	}
	var ss []string
	for _, s := range strings.Split(*scheds, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if _, err := path.New(s, path.NewPaths(nil)); err != nil {
				return fmt.Errorf("lab: --schedulers: %w", err)
			}
			ss = append(ss, s)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root (it creates network namespaces, veths, TUN devices and raw sockets)")
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *debug {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if n, err := netns.CleanStale(); err == nil && n > 0 {
		fmt.Fprintf(os.Stderr, "lab: removed %d namespaces left by killed runs\n", n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	toolName := map[string]string{traffic.ToolGo: "the built-in Go sender and receiver", traffic.ToolIperf3: "iperf3"}[*tool]
	ccName := *cc
	if ccName == "" {
		ccName = "the kernel's default"
	}
	fmt.Fprintf(os.Stderr, "lab bond: profile %s (%s), %v per method, %d flow(s), traffic from %s, congestion control %s\n",
		p.Name, p.Description, *duration, *flows, toolName, ccName)
	for _, f := range faults {
		fmt.Fprintf(os.Stderr, "lab bond: fault %s in every run\n", f)
	}
	if p.Unshaped() {
		fmt.Fprintln(os.Stderr, "lab bond: no link has a rate, delay or loss: the sites are joined by plain veths (as with --direct)")
	}
	rep, err := lab.RunBondBench(ctx, netns.RunID(), lab.BenchConfig{
		Profile: p, Duration: *duration, Flows: *flows, Schedulers: ss, Transports: variants, NoBaselines: *noBase, Log: log, Direct: *direct,
		Tool: *tool, CongestionControl: *cc, Faults: faults, UDP: *udp,
		Progress: func(phase string, left time.Duration) {
			fmt.Fprintf(os.Stderr, "  measuring %-18s about %v left\n", phase, left.Round(time.Second))
		},
		Note: func(msg string) { fmt.Fprintln(os.Stderr, "  "+msg) },
	})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	fmt.Fprintf(os.Stderr, "lab bond: inner TCP congestion control %s\n", rep.CongestionControl)
	printReport(os.Stdout, rep)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if *plotOut != "" {
		f, err := os.Create(*plotOut)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := lab.WriteSVG(f, rep); err != nil {
			return err
		}
	}
	return nil
}

func printReport(w io.Writer, rep *lab.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	faults := len(rep.Faults) > 0
	head := []string{"method", "goodput Mbit/s", "% of sum", "vs best link", "RTT p50 ms", "RTT p99 ms", "load +ms", "retransmits"}
	if faults {
		head = append(head, "gap ms", "RTOs", "in fault Mbit/s", "after Mbit/s")
	}
	head = append(head, "uplink shares", "tunnel CPU %", "CPU s/Gbit", "reorder lost/timeout/late")
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	orDash := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f", *v)
	}
	var udpRows []lab.BenchResult
	for _, r := range rep.Results {
		if r.IsUDP() {
			udpRows = append(udpRows, r)
			continue
		}
		if r.Error != "" || r.Skipped != "" {
			// The reason trails the row: text after the last cell widens no column.
			why := "failed: " + r.Error
			if r.Skipped != "" {
				why = "skipped: " + r.Skipped
			}
			fmt.Fprintf(tw, "%s%s\t  %s\n", r.Method, strings.Repeat("\t-", len(head)-1), why)
			continue
		}
		cpu, perGbit, ro, rt, rto := "-", "-", "-", "-", "-"
		if r.CPUPct > 0 {
			cpu = fmt.Sprintf("%.0f", r.CPUPct)
		}
		if r.CPUSPerGbit > 0 {
			perGbit = fmt.Sprintf("%.2f", r.CPUSPerGbit)
		}
		if r.Reorder != nil {
			ro = fmt.Sprintf("%d/%d/%d", r.Reorder.HolesLost, r.Reorder.HolesTimeout, r.Reorder.Late)
		}
		if r.Retransmits >= 0 {
			rt = fmt.Sprint(r.Retransmits)
		}
		if r.RTO >= 0 {
			rto = fmt.Sprint(r.RTO)
		}
		load := "-"
		if r.IdleRTTMs > 0 {
			load = fmt.Sprintf("%.1f", r.LatencyUnderLoadMs)
		}
		var sh []string
		for _, s := range r.LinkShare {
			sh = append(sh, fmt.Sprintf("%.0f", 100*s))
		}
		// 0: not reported (a link without a rate; no link-N row to compare).
		sumPct, vsBest := "-", "-"
		if r.SumPct > 0 {
			sumPct = fmt.Sprintf("%.1f", r.SumPct)
		}
		if r.VsBestLink > 0 {
			vsBest = fmt.Sprintf("%.2f", r.VsBestLink)
		}
		cells := []string{r.Method, fmt.Sprintf("%.1f", r.GoodputMbps), sumPct, vsBest,
			fmt.Sprintf("%.1f", r.RTTP50Ms), fmt.Sprintf("%.1f", r.RTTP99Ms), load, rt}
		if faults {
			cells = append(cells, fmt.Sprintf("%.0f", r.LongestGapMs), rto, orDash(r.RateDuringFaultMbps), orDash(r.RateAfterFaultMbps))
		}
		cells = append(cells, strings.Join(sh, "/"), cpu, perGbit, ro)
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	if len(udpRows) > 0 {
		fmt.Fprintln(w)
		printUDP(w, udpRows)
	}
}

// printUDP is the table of the UDP rows (--udp).
func printUDP(w io.Writer, rows []lab.BenchResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"UDP", "offered Mbit/s", "goodput Mbit/s", "sent", "received %", "out of order", "duplicates", "delay p50 ms", "delay p99 ms", "uplink shares", "reorder lost/timeout/late"}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rows {
		if r.UDPStats == nil {
			why := "failed: " + r.Error
			if r.Skipped != "" {
				why = "skipped: " + r.Skipped
			}
			fmt.Fprintf(tw, "%s%s\t  %s\n", r.Method, strings.Repeat("\t-", len(head)-1), why)
			continue
		}
		u := r.UDPStats
		var sh []string
		for _, s := range r.LinkShare {
			sh = append(sh, fmt.Sprintf("%.0f", 100*s))
		}
		ro := "-"
		if r.Reorder != nil {
			ro = fmt.Sprintf("%d/%d/%d", r.Reorder.HolesLost, r.Reorder.HolesTimeout, r.Reorder.Late)
		}
		cells := []string{r.Method, fmt.Sprintf("%.1f", u.RateMbit), fmt.Sprintf("%.1f", r.GoodputMbps), fmt.Sprint(u.Sent),
			fmt.Sprintf("%.2f", u.ReceivedPct), fmt.Sprint(u.OutOfOrder), fmt.Sprint(u.Duplicates),
			fmt.Sprintf("%.1f", u.DelayP50Ms), fmt.Sprintf("%.1f", u.DelayP99Ms), strings.Join(sh, "/"), ro}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	for _, r := range rows {
		if u := r.UDPStats; u != nil && (u.RcvbufDrops > 0 || u.Skipped > 0) {
			fmt.Fprintf(w, "%s: %d datagrams dropped by the receiving socket, %d not sent (sender stalled): not the path's loss\n", r.Method, u.RcvbufDrops, u.Skipped)
		}
	}
}

func runLabDirector(args []string) error {
	fs := pflag.NewFlagSet("lab director", pflag.ContinueOnError)
	reals := fs.Int("reals", 3, "real servers")
	sched := fs.String("scheduler", "rr", "connection scheduler")
	requests := fs.Int("requests", 3000, "requests for the spread, a connection each")
	clients := fs.Int("clients", 16, "concurrent HTTP clients for the throughput run")
	body := fs.Int("body", 256<<10, "bytes of each HTTP response")
	duration := fs.Duration("duration", 10*time.Second, "time per throughput run")
	jsonOut := fs.String("json", "", "write the results as JSON to FILE")
	ingress := fs.String("ingress", "tun,ring", "the director's ingress modes to measure small packets with, a comma list (tun, ring)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root")
	}
	var modes []string
	for _, m := range strings.Split(*ingress, ",") {
		if m = strings.TrimSpace(m); m != "" {
			modes = append(modes, m)
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return err
	}
	if n, err := netns.CleanStale(); err == nil && n > 0 {
		fmt.Fprintf(os.Stderr, "lab: removed %d namespaces left by killed runs\n", n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := lab.RunDirectorBench(ctx, netns.RunID(), lab.DirectorBenchConfig{Bin: bin, Reals: *reals, Scheduler: *sched,
		Requests: *requests, Concurrency: *clients, BodyBytes: *body, Duration: *duration, Ingress: modes,
		Progress: func(p string) { fmt.Fprintln(os.Stderr, "  "+p) }})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	fmt.Printf("spread of %d new connections (%s): %v\n", *requests, *sched, rep.Spread)
	fmt.Printf("direct server return: the director received %.1f MB while the client received %.1f MB\n", rep.DirectorRxMB, rep.ClientRxMB)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "balancer\trequests/s\tresponses Gbit/s\tbalancer CPU %%\tfailures\t\n")
	for _, r := range rep.Rows {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t\t\t\t\n", r.Method, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.0f\t%d\t\n", r.Method, r.ReqPerS, r.Gbps, r.CPUPct, r.Failures)
	}
	tw.Flush()
	fmt.Println("small packets (64 B, UDP) through the director on one core; packets/s is what it sent (the wire drops it), offered what was put on the wire to it:")
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "ingress\tflows\tpackets/s\tdirector CPU %%\tper core-second\toffered/s\t\n")
	for _, r := range rep.Small {
		if r.Error != "" && r.PPS == 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t\t\n", r.Ingress, r.Flows, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t\n", r.Ingress, r.Flows, r.PPS, r.CPUPct, r.PerCore, r.OfferedPPS)
	}
	tw.Flush()
	for _, r := range rep.Small {
		if r.Error != "" && r.PPS > 0 {
			fmt.Printf("%s, %s flows: %s\n", r.Ingress, r.Flows, r.Error)
		}
		if r.CPUPct < 90 && r.CoreBusyPct > 95 {
			fmt.Printf("%s, %s flows: the director's core was %.0f%% busy, the director %.0f%% of it: something else ran there\n", r.Ingress, r.Flows, r.CoreBusyPct, r.CPUPct)
		}
		if r.SenderBound {
			fmt.Printf("%s, %s flows: the director sent all it was offered with CPU to spare: the sender may be the limit\n", r.Ingress, r.Flows)
		}
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		return os.WriteFile(*jsonOut, append(b, '\n'), 0o644)
	}
	return nil
}
