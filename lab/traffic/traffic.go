// Package traffic is the lab's traffic: timed TCP and MPTCP flows between
// namespaces (the built-in Go sender and receiver, or iperf3), hashed
// transfers, ICMP pings and the namespace's retransmission counter.
package traffic

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
)

// The traffic tools: every TCP row of a bench uses the same one.
const (
	ToolGo     = "go"     // the built-in sender and receiver (gotraffic.go); opens MPTCP natively
	ToolIperf3 = "iperf3" // iperf3, through `mptcpize run` for MPTCP
)

// Tools lists the traffic tools, the default first.
var Tools = []string{ToolGo, ToolIperf3}

// Flow is a timed TCP test from one namespace to another.
type Flow struct {
	Src, Dst         *netns.Namespace
	SrcAddr, DstAddr string // SrcAddr may be empty
	Duration         time.Duration
	Flows            int
	MPTCP            bool
	Tool             string // ToolGo ("": the same) or ToolIperf3
	// CongestionControl is the flows' TCP congestion control, set on each
	// socket (TCP_CONGESTION); "": the namespace's default.
	CongestionControl string
	// Measuring, if set, is called with the start of the measured
	// interval (after the warm-up); the Go tool only.
	Measuring func(t0 time.Time)
}

// FlowResult is what one timed TCP test measured.
type FlowResult struct {
	GoodputMbps float64
	Retransmits int64 // -1 if unknown
	Tool        string
	PerSecond   []float64 // Mbit/s each second
	// Bins are the bytes the receivers read in each BinEvery of the
	// measured interval; the Go tool only.
	Bins []int64
	// RTTs are the sender's smoothed RTT (tcpi_rtt) sampled while loaded,
	// every subflow's for MPTCP; the Go tool only.
	RTTs []time.Duration
	// CongestionControl is what the sender's sockets used (TCP_CONGESTION).
	CongestionControl string
	// Subflows is the most subflows an MPTCP connection had at once (the
	// Go tool only; 1 for TCP).
	Subflows int
	// ToolCPU is the CPU time the Go tool's threads used in this process.
	ToolCPU time.Duration
}

// Iperf3Available reports whether iperf3 is installed.
func Iperf3Available() bool {
	_, err := exec.LookPath("iperf3")
	return err == nil
}

// ToolCanRun says why a tool cannot run a flow here (nil: it can): iperf3
// must be installed, and for MPTCP so must mptcpize, which Debian 12's
// mptcpd 0.12 does not ship. The Go tool needs nothing.
func ToolCanRun(tool string, mptcp bool) error {
	switch tool {
	case "", ToolGo:
		return nil
	case ToolIperf3:
		if !Iperf3Available() {
			return errors.New("iperf3 is not installed (apt-get install iperf3)")
		}
		if mptcp {
			if _, err := exec.LookPath("mptcpize"); err != nil {
				return errors.New("mptcpize is not installed (Debian 12's mptcpd ships none; --tool go opens MPTCP natively)")
			}
		}
		return nil
	}
	return fmt.Errorf("no traffic tool %q (%s)", tool, strings.Join(Tools, ", "))
}

// Throughput runs the flow with its tool: the built-in Go sender and
// receiver unless f.Tool is ToolIperf3.
func Throughput(ctx context.Context, f Flow) (FlowResult, error) {
	if f.Flows < 1 {
		f.Flows = 1
	}
	if err := ToolCanRun(f.Tool, f.MPTCP); err != nil {
		return FlowResult{}, err
	}
	if f.Tool == ToolIperf3 {
		return iperf3(ctx, f)
	}
	return goFlow(ctx, f)
}

// command returns cmd args, wrapped in `mptcpize run` for MPTCP.
func command(ctx context.Context, mptcp bool, args ...string) (*exec.Cmd, error) {
	if mptcp {
		if err := ToolCanRun(ToolIperf3, true); err != nil {
			return nil, err
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
		"-P", strconv.Itoa(f.Flows), "-J", "-O", fmt.Sprint(int(WarmUp.Seconds()))}
	if f.CongestionControl != "" {
		args = append(args, "-C", f.CongestionControl)
	}
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
			SenderCC string `json:"sender_tcp_congestion"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return FlowResult{}, fmt.Errorf("iperf3: %v (%v)", cerr, err)
	}
	if r.Error != "" {
		return FlowResult{}, fmt.Errorf("iperf3: %s (server: %s)", r.Error, bytes.TrimSpace(srvErr.Bytes()))
	}
	res := FlowResult{GoodputMbps: r.End.SumReceived.BitsPerSecond / 1e6, Retransmits: r.End.SumSent.Retransmits, Tool: ToolIperf3,
		CongestionControl: r.End.SenderCC}
	for _, iv := range r.Intervals {
		if !iv.Sum.Omitted {
			res.PerSecond = append(res.PerSecond, iv.Sum.BitsPerSecond/1e6)
		}
	}
	return res, nil
}

func freePort(ns *netns.Namespace, addr string) (int, error) {
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

// TCPTimeouts reads the namespace's TcpExt TCPTimeouts counter (what
// `nstat TcpExtTCPTimeouts` shows): retransmission timeouts of every TCP
// socket in it.
func TCPTimeouts(ns *netns.Namespace) (int64, error) {
	return ProcCounter(ns, "netstat", "TcpExt:", "TCPTimeouts")
}

// RetransSegs reads the namespace's TCP RetransSegs counter (what
// `nstat TcpRetransSegs` shows): every retransmitted segment of every TCP
// and MPTCP-subflow socket in it, whatever tool made the traffic.
func RetransSegs(ns *netns.Namespace) (int64, error) {
	return ProcCounter(ns, "snmp", "Tcp:", "RetransSegs")
}

// ProcCounter reads one counter of /proc/net/FILE (snmp, netstat: a line
// of names, then a line of values, per section) in the namespace.
func ProcCounter(ns *netns.Namespace, file, section, counter string) (int64, error) {
	var v int64 = -1
	err := ns.Do(func() error {
		// thread-self: /proc/self/net would show the main thread's namespace.
		b, err := os.ReadFile("/proc/thread-self/net/" + file)
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != section {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == counter && i < len(f) {
					v, err = strconv.ParseInt(f[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no %s %s in /proc/net/%s", section, counter, file)
	})
	return v, err
}
