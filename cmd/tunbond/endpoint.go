package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tunbond/tunbond/endpoints/bond"
)

func runEndpoint(args []string) error {
	fs := newFlags("endpoint", "endpoint --config FILE [flags]")
	bond.EndpointFlags(fs)
	debug := fs.Bool("debug", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	file, _ := fs.GetString("config")
	if file == "" {
		return errors.New("endpoint: --config FILE is required (see testdata/site-a.yaml)")
	}
	cfg, err := bond.LoadConfig(file, fs)
	if err != nil {
		return err
	}
	log := newLogger(*debug)
	return runRole("endpoint", cfg.Metrics.Listen, log, func(ctx context.Context, reg prometheus.Registerer) error {
		return bond.Run(ctx, cfg, bond.Deps{Metrics: reg, Log: log})
	})
}

func runCtl(args []string) error {
	fs := newFlags("ctl", "ctl [--socket PATH] [--json] status | weight PATH WEIGHT")
	socket := fs.String("socket", bond.DefaultControlSocket, "control socket of the endpoint")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	var req bond.ControlRequest
	switch {
	case len(rest) == 0 || rest[0] == "status":
		req.Cmd = "status"
	case rest[0] == "weight" && len(rest) == 3:
		w, err := strconv.ParseInt(rest[2], 10, 64)
		if err != nil {
			return fmt.Errorf("ctl weight: %q is not a number", rest[2])
		}
		req = bond.ControlRequest{Cmd: "weight", Path: rest[1], Weight: w}
	default:
		return errors.New("ctl: status | weight PATH WEIGHT")
	}
	resp, err := bond.Control(*socket, req)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(os.Stdout).Encode(resp)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "PATH\tSTATE\tWEIGHT\tRTT ms\tRATE Mbit/s\tOWD +ms\tQUEUE ms\tLOSS %\tTX pkts\tTX bytes\tRX pkts\tRX bytes\tTX errs\tRX drops\tSTALLS\tREPAIRED\tTRANSPORT\tREMOTE\t")
	for _, p := range resp.Paths {
		state := "down"
		switch {
		case p.Waiting != "":
			state = "waiting"
		case p.Up && p.Stalled:
			state = "stalled"
		case p.Up && p.Excluded != "":
			state = "out:" + p.Excluded
		case p.Up:
			state = "up"
		}
		remote := p.Remote
		if remote == "" {
			remote = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.2f\t%.1f\t%.1f\t%.1f\t%.2f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t\n", p.Name, state, p.Weight, p.RTTMs,
			p.RateMbit, p.OneWayMs, p.QueueMs, p.LossPct,
			p.TxPackets, p.TxBytes, p.RxPackets, p.RxBytes, p.TxErrors, p.Dropped, p.Stalls, p.Repaired, p.Transport, remote)
	}
	tw.Flush()
	for _, p := range resp.Paths {
		if p.Waiting != "" {
			fmt.Printf("%s waiting: %s\n", p.Name, p.Waiting)
		}
	}
	if resp.Scheduler != "" {
		line := "scheduler: " + resp.Scheduler
		if resp.Solo != "" {
			line += " (single link: " + resp.Solo + "; the others are left out, see STATE)"
		}
		fmt.Println(line)
	}
	if resp.Reorder != nil {
		fmt.Printf("reorder: %v\n", resp.Reorder)
	}
	return nil
}
