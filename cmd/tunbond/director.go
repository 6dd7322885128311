package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/tunbond/tunbond/endpoints/host"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/endpoints/realserver"
)

func rootHost(role string) (*host.Netlink, error) {
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("tunbond %s must run as root (TUN device, raw sockets, routes)", role)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return nil, fmt.Errorf("/dev/net/tun is missing: load the tun module (modprobe tun): %w", err)
	}
	return host.Current()
}

func awaitSignal(log *slog.Logger) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	log.Info("stopping", "signal", (<-sig).String())
}

func runDirector(args []string) error {
	fs := pflag.NewFlagSet("director", pflag.ContinueOnError)
	director.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	file, _ := fs.GetString("config")
	cfg, err := director.LoadConfig(file, fs)
	if err != nil {
		return err
	}
	host, err := rootHost("director")
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	d, err := director.Start(cfg.RunConfig(), host, log)
	if err != nil {
		return err
	}
	defer d.Close()
	ln, err := director.ServeAdmin(cfg.Control.Socket, d.Director)
	if err != nil {
		return err
	}
	defer func() { ln.Close(); os.Remove(cfg.Control.Socket) }()
	reg := d.Registry()
	reg.MustRegister(d) // the data path's own counters
	stop, err := serveMetrics(cfg.Metrics.Listen, reg)
	if err != nil {
		return err
	}
	defer stop()
	log.Info("director started", "tun", cfg.TUN.Name, "local", cfg.Local, "services", len(cfg.Services), "admin", cfg.Control.Socket)
	awaitSignal(log)
	return nil
}

func runRealServer(args []string) error {
	fs := pflag.NewFlagSet("realserver", pflag.ContinueOnError)
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
	host, err := rootHost("realserver")
	if err != nil {
		return err
	}
	if check, _ := fs.GetBool("check"); check {
		problems := realserver.Check(cfg, host)
		if len(problems) == 0 {
			fmt.Println("ok: nothing on this host stops it from serving", fc.VIPs)
			return nil
		}
		for _, p := range problems {
			fmt.Println("-", p)
		}
		return fmt.Errorf("%d problem(s)", len(problems))
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	a, err := realserver.Start(*cfg, host, log)
	if err != nil {
		return err
	}
	defer a.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(a)
	stop, err := serveMetrics(fc.Metrics.Listen, reg)
	if err != nil {
		return err
	}
	defer stop()
	log.Info("real server agent started", "tun", cfg.TUN, "vips", fc.VIPs, "directors", fc.Directors)
	awaitSignal(log)
	return nil
}
