package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// FlowResult is what one timed TCP test measured.
type FlowResult struct {
	GoodputMbps float64
	Retransmits int64 // -1 if unknown
	Tool        string
	PerSecond   []float64 // Mbit/s each second
}

// Iperf3Available reports whether iperf3 is installed.
func Iperf3Available() bool {
	_, err := exec.LookPath("iperf3")
	return err == nil
}

// Throughput runs one TCP flow (flows in parallel) for d from src to dst's
// address addr, with iperf3 if installed, else the built-in Go sender.
func Throughput(ctx context.Context, src, dst *Namespace, addr string, d time.Duration, flows int) (FlowResult, error) {
	if Iperf3Available() {
		return iperf3(ctx, src, dst, addr, d, flows)
	}
	return goFlow(ctx, src, dst, addr, d, flows)
}

func iperf3(ctx context.Context, src, dst *Namespace, addr string, d time.Duration, flows int) (FlowResult, error) {
	ln, err := freePort(dst, addr)
	if err != nil {
		return FlowResult{}, err
	}
	srv := exec.CommandContext(ctx, "iperf3", "-s", "-1", "--forceflush", "-B", addr, "-p", strconv.Itoa(ln))
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return FlowResult{}, err
	}
	if err := dst.Start(srv); err != nil {
		return FlowResult{}, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	// Await the server's "Server listening on PORT" before starting the client.
	listening := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if !said && strings.Contains(sc.Text(), "Server listening") {
				said = true
				listening <- true
			}
		}
		if !said {
			listening <- false
		}
	}()
	select {
	case ok := <-listening:
		if !ok {
			return FlowResult{}, fmt.Errorf("iperf3 server did not start: %s", bytes.TrimSpace(srvErr.Bytes()))
		}
	case <-ctx.Done():
		return FlowResult{}, ctx.Err()
	}
	var out bytes.Buffer
	cli := exec.CommandContext(ctx, "iperf3", "-c", addr, "-p", strconv.Itoa(ln), "-t", fmt.Sprint(int(d.Seconds())),
		"-P", strconv.Itoa(flows), "-J", "-O", "1")
	cli.Stdout = &out
	cerr := src.Do(cli.Run)
	var r struct {
		Intervals []struct {
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
				Omitted       bool    `json:"omitted"`
			} `json:"sum"`
		} `json:"intervals"`
		End struct {
			SumSent struct {
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return FlowResult{}, fmt.Errorf("iperf3: %v (%v)", cerr, err)
	}
	if r.Error != "" {
		return FlowResult{}, fmt.Errorf("iperf3: %s (server: %s)", r.Error, bytes.TrimSpace(srvErr.Bytes()))
	}
	res := FlowResult{GoodputMbps: r.End.SumReceived.BitsPerSecond / 1e6, Retransmits: r.End.SumSent.Retransmits, Tool: "iperf3"}
	for _, iv := range r.Intervals {
		if !iv.Sum.Omitted {
			res.PerSecond = append(res.PerSecond, iv.Sum.BitsPerSecond/1e6)
		}
	}
	return res, nil
}

func freePort(ns *Namespace, addr string) (int, error) {
	var port int
	err := ns.Do(func() error {
		l, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	})
	return port, err
}

// goFlow is the built-in sender/receiver: flows TCP connections send as fast
// as they can for d; goodput is what the receiver counted, per second.
func goFlow(ctx context.Context, src, dst *Namespace, addr string, d time.Duration, flows int) (FlowResult, error) {
	var ln net.Listener
	if err := dst.Do(func() (err error) { ln, err = net.Listen("tcp4", net.JoinHostPort(addr, "0")); return }); err != nil {
		return FlowResult{}, err
	}
	defer ln.Close()
	counts := make(chan int64, 1024)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 256<<10)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						counts <- int64(n)
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, d+time.Second)
	defer cancel()
	for i := 0; i < flows; i++ {
		var c net.Conn
		if err := src.Do(func() (err error) { c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second); return }); err != nil {
			return FlowResult{}, err
		}
		go func() {
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					return
				}
			}
		}()
	}
	// One second of warm-up (as iperf3 -O 1), then d measured per second.
	res := FlowResult{Tool: "go", Retransmits: -1}
	warm := time.After(time.Second)
	var total, sec int64
	tick := (<-chan time.Time)(nil)
	deadline := (<-chan time.Time)(nil)
	for {
		select {
		case n := <-counts:
			sec += n
		case <-warm:
			sec = 0
			t := time.NewTicker(time.Second)
			defer t.Stop()
			tick = t.C
			deadline = time.After(d)
		case <-tick:
			res.PerSecond = append(res.PerSecond, float64(sec)*8/1e6)
			total += sec
			sec = 0
		case <-deadline:
			total += sec
			res.GoodputMbps = float64(total) * 8 / d.Seconds() / 1e6
			return res, nil
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

var _ = io.Discard
