package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/realserver"
)

func runDirector(args []string) error {
	fs := newFlags("director", "director --config FILE [flags]")
	director.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	file, _ := fs.GetString("config")
	cfg, err := director.LoadConfig(file, fs)
	if err != nil {
		return err
	}
	log := newLogger(false)
	rc := cfg.RunConfig()
	return runRole("director", cfg.Metrics.Listen, log, func(ctx context.Context, reg prometheus.Registerer) error {
		return director.Run(ctx, rc, director.Deps{Metrics: reg, Log: log})
	})
}

func runRealServer(args []string) error {
	fs := newFlags("realserver", "realserver --config FILE [--check] [flags]")
	realserver.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	file, _ := fs.GetString("config")
	if file == "" {
		return errors.New("realserver: --config FILE is required")
	}
	cfg, fc, err := realserver.LoadConfig(file, fs)
	if err != nil {
		return err
	}
	if check, _ := fs.GetBool("check"); check {
		if err := rootCheck("realserver"); err != nil {
			return err
		}
		h, err := host.Current()
		if err != nil {
			return err
		}
		problems := realserver.Check(cfg, h)
		if len(problems) == 0 {
			fmt.Println("ok: nothing on this host stops it from serving", fc.VIPs)
			return nil
		}
		for _, p := range problems {
			fmt.Println("-", p)
		}
		return fmt.Errorf("%d problem(s)", len(problems))
	}
	log := newLogger(false)
	return runRole("realserver", fc.Metrics.Listen, log, func(ctx context.Context, reg prometheus.Registerer) error {
		return realserver.Run(ctx, *cfg, realserver.Deps{Metrics: reg, Log: log})
	})
}
