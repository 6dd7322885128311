package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
)

// newFlags is a command's flag set: errors are returned, and --help prints
// the usage line and the flags to standard output (main exits 0 on it).
func newFlags(name, usageLine string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(os.Stdout)
	fs.Usage = func() {
		fmt.Fprintf(os.Stdout, "Usage: tunbond %s\n\nFlags:\n%s", usageLine, fs.FlagUsages())
	}
	return fs
}

// rootCheck is what every role needs of the machine before it starts.
func rootCheck(role string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("tunbond %s must run as root (it creates a TUN device, raw sockets, addresses and routes)", role)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		return fmt.Errorf("/dev/net/tun is missing: load the tun module (modprobe tun) or give the container the device: %w", err)
	}
	return nil
}

// newLogger logs text to standard error, at debug level if asked.
func newLogger(debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// runRole is the life of every long-running role, alike for all: the root
// check, a context that SIGINT, SIGTERM and SIGHUP cancel, a Prometheus
// registry served on metricsListen (if set) into which the role registers
// its collectors, then run until it returns. A role that stops by itself
// (its TUN deleted, say) returns an error, and tunbond exits non-zero.
func runRole(role, metricsListen string, log *slog.Logger,
	run func(ctx context.Context, reg prometheus.Registerer) error) error {
	if err := rootCheck(role); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	go func() {
		select {
		case s := <-sig:
			log.Info("stopping", "signal", s.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stop, err := serveMetrics(metricsListen, reg)
	if err != nil {
		return err
	}
	defer stop()
	return run(ctx, reg)
}

// serveMetrics serves a registry on listen until stop is called.
func serveMetrics(listen string, g prometheus.Gatherer) (stop func(), err error) {
	if listen == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(g, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
