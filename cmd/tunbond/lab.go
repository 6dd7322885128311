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
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/tunbond/tunbond/lab"
)

func runLab(args []string) error {
	if len(args) == 0 || args[0] != "bond" {
		return errors.New("lab: usage: tunbond lab bond [--rates 100,100] [--duration 10s] [--flows 1] [--json FILE]")
	}
	fs := pflag.NewFlagSet("lab bond", pflag.ContinueOnError)
	rates := fs.String("rates", "100,100", "uplink rates in Mbit/s, comma separated (TBF both ways; 0 = unshaped veth)")
	duration := fs.Duration("duration", 10*time.Second, "measured time per method")
	flows := fs.Int("flows", 1, "parallel TCP flows")
	scheds := fs.String("schedulers", "rr,wrr,flowhash", "tunbond schedulers to measure")
	jsonOut := fs.String("json", "", "write the results as JSON to FILE")
	debug := fs.Bool("debug", false, "log the endpoints")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to FILE")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("lab: must run as root (it creates network namespaces, veths, TUN devices and raw sockets)")
	}
	var rs []float64
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || r < 0 {
			return fmt.Errorf("lab: --rates: %q is not a rate in Mbit/s", s)
		}
		rs = append(rs, r)
	}
	if *duration < time.Second {
		return errors.New("lab: --duration must be at least 1s")
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if *debug {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	tool := "built-in Go TCP sender"
	if lab.Iperf3Available() {
		tool = "iperf3"
	}
	fmt.Fprintf(os.Stderr, "lab bond: %d uplinks %v Mbit/s, %v per method, %d flow(s), traffic from %s\n", len(rs), rs, *duration, *flows, tool)
	res, err := lab.RunBondBench(ctx, lab.RunID(), lab.BenchConfig{
		RatesMbit: rs, Duration: *duration, Flows: *flows, Schedulers: strings.Split(*scheds, ","), Log: log,
		Progress: func(phase string, left time.Duration) {
			fmt.Fprintf(os.Stderr, "  measuring %-18s about %v left\n", phase, left.Round(time.Second))
		},
	})
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "method\tgoodput Mbit/s\t% of sum\tvs best link\tretransmits\ttunbond CPU %\treorder lost/timeout/late\t")
	for _, r := range res {
		sumPct, cpu, ro, rt := "-", "-", "-", "-"
		if r.SumPct > 0 {
			sumPct = fmt.Sprintf("%.1f", r.SumPct)
		}
		if r.CPUPct > 0 {
			cpu = fmt.Sprintf("%.0f", r.CPUPct)
		}
		if r.Reorder != nil {
			ro = fmt.Sprintf("%d/%d/%d", r.Reorder.HolesLost, r.Reorder.HolesTimeout, r.Reorder.Late)
		}
		if r.Retransmits >= 0 {
			rt = fmt.Sprint(r.Retransmits)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%s\t%.2f\t%s\t%s\t%s\t\n", r.Method, r.GoodputMbps, sumPct, r.VsBestLink, rt, cpu, ro)
	}
	tw.Flush()
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"links_mbit": rs, "duration_s": duration.Seconds(), "flows": *flows, "results": res}, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
