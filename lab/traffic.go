package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Flow is a timed TCP test from one namespace to another.
type Flow struct {
	Src, Dst         *Namespace
	SrcAddr, DstAddr string // SrcAddr may be empty
	Duration         time.Duration
	Flows            int
	MPTCP            bool
}

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

// Throughput runs the flow with iperf3 if installed (through mptcpize for
// MPTCP), else with the built-in Go sender and receiver.
func Throughput(ctx context.Context, f Flow) (FlowResult, error) {
	if f.Flows < 1 {
		f.Flows = 1
	}
	if Iperf3Available() {
		return iperf3(ctx, f)
	}
	return goFlow(ctx, f)
}

// command returns cmd args, wrapped in `mptcpize run` for MPTCP.
func command(ctx context.Context, mptcp bool, args ...string) (*exec.Cmd, error) {
	if mptcp {
		if _, err := exec.LookPath("mptcpize"); err != nil {
			return nil, fmt.Errorf("mptcpize is not installed (apt-get install mptcpd)")
		}
		args = append([]string{"mptcpize", "run"}, args...)
	}
	c := exec.CommandContext(ctx, args[0], args[1:]...)
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return c, nil
}

func iperf3(ctx context.Context, f Flow) (FlowResult, error) {
	port, err := freePort(f.Dst, f.DstAddr)
	if err != nil {
		return FlowResult{}, err
	}
	srv, err := command(ctx, f.MPTCP, "iperf3", "-s", "-1", "--forceflush", "-B", f.DstAddr, "-p", strconv.Itoa(port))
	if err != nil {
		return FlowResult{}, err
	}
	var srvErr bytes.Buffer
	srv.Stderr = &srvErr
	stdout, err := srv.StdoutPipe()
	if err != nil {
		return FlowResult{}, err
	}
	if err := f.Dst.Start(srv); err != nil {
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
	args := []string{"iperf3", "-c", f.DstAddr, "-p", strconv.Itoa(port), "-t", fmt.Sprint(int(f.Duration.Seconds())),
		"-P", strconv.Itoa(f.Flows), "-J", "-O", "1"}
	if f.SrcAddr != "" {
		args = append(args, "-B", f.SrcAddr)
	}
	cli, err := command(ctx, f.MPTCP, args...)
	if err != nil {
		return FlowResult{}, err
	}
	var out bytes.Buffer
	cli.Stdout = &out
	cerr := f.Src.Do(cli.Run)
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

// goFlow is the built-in sender and receiver: Flows TCP (or MPTCP)
// connections send as fast as they can; goodput is what the receiver
// counted, after one second of warm-up (as iperf3 -O 1).
func goFlow(ctx context.Context, f Flow) (FlowResult, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(f.MPTCP)
	var ln net.Listener
	if err := f.Dst.Do(func() (err error) { ln, err = lc.Listen(ctx, "tcp4", net.JoinHostPort(f.DstAddr, "0")); return }); err != nil {
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
	ctx, cancel := context.WithTimeout(ctx, f.Duration+10*time.Second) // warm-up + duration, with slack
	defer cancel()
	d := net.Dialer{Timeout: 5 * time.Second}
	d.SetMultipathTCP(f.MPTCP)
	if f.SrcAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(f.SrcAddr)}
	}
	var retrans sync.Map
	var senders sync.WaitGroup
	for i := 0; i < f.Flows; i++ {
		var c net.Conn
		if err := f.Src.Do(func() (err error) { c, err = d.DialContext(ctx, "tcp4", ln.Addr().String()); return }); err != nil {
			return FlowResult{}, err
		}
		senders.Add(1)
		go func() {
			defer senders.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			buf := make([]byte, 256<<10)
			for ctx.Err() == nil {
				if _, err := c.Write(buf); err != nil {
					break
				}
				retrans.Store(i, tcpRetransmits(c))
			}
		}()
	}
	res := FlowResult{Tool: "go", Retransmits: -1}
	warm := time.After(time.Second)
	var total, sec int64
	var tick <-chan time.Time
	var deadline <-chan time.Time
	for {
		select {
		case n := <-counts:
			sec += n
		case <-warm:
			sec = 0
			t := time.NewTicker(time.Second)
			defer t.Stop()
			tick = t.C
			deadline = time.After(f.Duration)
		case <-tick:
			res.PerSecond = append(res.PerSecond, float64(sec)*8/1e6)
			total += sec
			sec = 0
		case <-deadline:
			total += sec
			res.GoodputMbps = float64(total) * 8 / f.Duration.Seconds() / 1e6
			cancel()
			senders.Wait()
			retrans.Range(func(_, v any) bool {
				if r := v.(int64); r >= 0 {
					res.Retransmits = max(res.Retransmits, 0) + r
				}
				return true
			})
			return res, nil
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
}

// tcpRetransmits reads the connection's total retransmissions (TCP_INFO),
// or -1.
func tcpRetransmits(c net.Conn) int64 {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1
	}
	r := int64(-1)
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO); err == nil {
			r = int64(info.Total_retrans)
		}
	})
	return r
}

// RetransSegs reads the namespace's TCP RetransSegs counter (what
// `nstat TcpRetransSegs` shows): every retransmitted segment of every TCP
// and MPTCP-subflow socket in it, whatever tool made the traffic.
func RetransSegs(ns *Namespace) (int64, error) {
	var v int64 = -1
	err := ns.Do(func() error {
		// thread-self: /proc/self/net would show the main thread's namespace.
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "Tcp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "RetransSegs" && i < len(f) {
					v, err = strconv.ParseInt(f[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Tcp RetransSegs in /proc/net/snmp")
	})
	return v, err
}
