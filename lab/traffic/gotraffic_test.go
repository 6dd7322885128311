package traffic

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/lab/netns"
)

// direct builds site A and site B joined by n veths, each shaped by TBF at
// rateMbit both ways (0: not shaped).
func direct(t *testing.T, n int, rateMbit float64) *netns.Net {
	t.Helper()
	requireRoot(t)
	net, err := netns.Sites(n).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := net.Close(); err != nil {
			t.Error(err)
		}
	})
	for i := 0; i < n && rateMbit > 0; i++ {
		for _, side := range []string{"a", "b"} {
			if err := netns.ShapeTBF(net.NS(side), netns.UplinkName(i), uint64(rateMbit*1e6), 4000, 0.05); err != nil {
				t.Fatal(err)
			}
		}
	}
	return net
}

func nsDefaultCC(t *testing.T, ns *netns.Namespace) string {
	t.Helper()
	var b []byte
	if err := ns.Do(func() (err error) {
		b, err = os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
		return
	}); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestGoFlowTCP: one TCP flow over a 40 Mbit/s link measures about 40
// Mbit/s each second, the sender's RTT, and the tool's CPU; the congestion
// control is the namespace's by default and any available one on request,
// also one the namespace could not default to.
func TestGoFlowTCP(t *testing.T) {
	n := direct(t, 1, 40)
	def := nsDefaultCC(t, n.NS("a"))
	other := "cubic"
	if def == "cubic" {
		other = "reno"
	}
	for _, cc := range []string{"", other} {
		t.Run("cc="+cc, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			r, err := Throughput(ctx, Flow{Src: n.NS("a"), Dst: n.NS("b"), DstAddr: netns.UplinkAddr(0, 2),
				Duration: 2 * time.Second, CongestionControl: cc})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%.1f Mbit/s %v, %d RTT samples, retrans %d, cc %s, tool CPU %v", r.GoodputMbps, r.PerSecond, len(r.RTTs), r.Retransmits, r.CongestionControl, r.ToolCPU)
			want := cc
			if want == "" {
				want = def
			}
			if r.Tool != ToolGo || r.CongestionControl != want {
				t.Errorf("tool %q cc %q, want go %q", r.Tool, r.CongestionControl, want)
			}
			if r.GoodputMbps < 30 || r.GoodputMbps > 41 {
				t.Errorf("goodput %.1f Mbit/s over a 40 Mbit/s link", r.GoodputMbps)
			}
			if len(r.PerSecond) != 2 {
				t.Errorf("per second %v, want 2 samples", r.PerSecond)
			}
			for _, v := range r.PerSecond {
				if v < 25 || v > 45 {
					t.Errorf("a second of %.1f Mbit/s over a 40 Mbit/s link", v)
				}
			}
			// 10 a second for 2 s, give or take a tick.
			if len(r.RTTs) < 18 || r.Subflows != 1 || r.Retransmits < 0 || r.ToolCPU <= 0 {
				t.Errorf("%d RTT samples, %d subflows, retransmits %d, tool CPU %v", len(r.RTTs), r.Subflows, r.Retransmits, r.ToolCPU)
			}
			for _, rtt := range r.RTTs {
				// TBF's 50 ms queue at most, and no delay.
				if rtt <= 0 || rtt > 200*time.Millisecond {
					t.Fatalf("RTT sample %v", rtt)
				}
			}
		})
	}
}

// TestGoFlowMPTCP: one MPTCP connection over two 40 Mbit/s links has two
// subflows, both links carry about half of it, and it gets about 2× one link.
func TestGoFlowMPTCP(t *testing.T) {
	n := direct(t, 2, 40)
	if err := netns.SetupMPTCP(n, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	read := func() []uint64 { return netns.UplinkTxBytes(n, 2) }
	before := read()
	r, err := Throughput(ctx, Flow{Src: n.NS("a"), Dst: n.NS("b"), DstAddr: netns.UplinkAddr(0, 2), Duration: 2 * time.Second, MPTCP: true})
	if err != nil {
		t.Fatal(err)
	}
	after := read()
	d := []float64{float64(after[0] - before[0]), float64(after[1] - before[1])}
	share := d[1] / (d[0] + d[1])
	t.Logf("%.1f Mbit/s %v, %d subflows, uplink 2 carried %.2f of the bytes, %d RTT samples", r.GoodputMbps, r.PerSecond, r.Subflows, share, len(r.RTTs))
	if r.Subflows != 2 {
		t.Errorf("%d subflows, want 2", r.Subflows)
		for _, side := range []string{"a", "b"} {
			t.Logf("site %s: %s", side, mptcpCounters(n.NS(side)))
		}
	}
	if share < 0.3 || share > 0.7 {
		t.Errorf("uplink 2 carried %.2f of the bytes, want about half", share)
	}
	if r.GoodputMbps < 60 || r.GoodputMbps > 81 {
		t.Errorf("goodput %.1f Mbit/s over two 40 Mbit/s links", r.GoodputMbps)
	}
	if len(r.RTTs) < 30 { // both subflows, 10 a second
		t.Errorf("%d RTT samples", len(r.RTTs))
	}
}

// TestGoFlowMPTCPFallbackFails: an MPTCP sender whose receiver answers
// with plain TCP falls back to TCP, and the sender says so instead of
// measuring TCP as MPTCP.
func TestGoFlowMPTCPFallbackFails(t *testing.T) {
	n := direct(t, 1, 0)
	var ln net.Listener
	if err := n.NS("b").Do(func() (err error) {
		lc := net.ListenConfig{}
		lc.SetMultipathTCP(false)
		ln, err = lc.Listen(context.Background(), "tcp4", netns.UplinkAddr(0, 2)+":0")
		return
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(io.Discard, c)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := &goFlows{f: Flow{Src: n.NS("a"), Dst: n.NS("b"), DstAddr: netns.UplinkAddr(0, 2), MPTCP: true}, proto: unix.IPPROTO_MPTCP}
	errc := make(chan error, 1)
	g.threads.Add(1)
	go g.send(ctx, ln.Addr().(*net.TCPAddr).Port, func(_ *sock, _ string, err error) { errc <- err })
	err := <-errc
	g.stop()
	if err == nil || !strings.Contains(err.Error(), "fell back") {
		t.Fatalf("err %v, want a fallback error", err)
	}
}

// TestGoFlowStops: a cancelled flow returns at once with the context's error.
func TestGoFlowStops(t *testing.T) {
	n := direct(t, 1, 20)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	start := time.Now()
	_, err := Throughput(ctx, Flow{Src: n.NS("a"), Dst: n.NS("b"), DstAddr: netns.UplinkAddr(0, 2), Duration: time.Minute})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("returned %v after the start, 1.5 s after the cancel", d)
	}
}

// TestGoFlowUnknownCongestion: a congestion control the kernel lacks is an
// error, not a silent default.
func TestGoFlowUnknownCongestion(t *testing.T) {
	n := direct(t, 1, 0)
	if _, err := ProbeCongestion(n.NS("a"), "no-such-cc"); err == nil {
		t.Fatal("ProbeCongestion accepted no-such-cc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Throughput(ctx, Flow{Src: n.NS("a"), Dst: n.NS("b"), DstAddr: netns.UplinkAddr(0, 2), Duration: 2 * time.Second, CongestionControl: "no-such-cc"})
	if err == nil || !strings.Contains(err.Error(), "no-such-cc") {
		t.Fatalf("err %v", err)
	}
}

// mptcpCounters returns a namespace's non-zero MPTcpExt counters (nstat's).
func mptcpCounters(ns *netns.Namespace) string {
	var b []byte
	_ = ns.Do(func() (err error) { b, err = os.ReadFile("/proc/thread-self/net/netstat"); return })
	var names, out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "MPTcpExt:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i := 1; i < len(f) && i < len(names); i++ {
			if f[i] != "0" {
				out = append(out, names[i]+"="+f[i])
			}
		}
	}
	return strings.Join(out, " ")
}
