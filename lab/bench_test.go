package lab

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/traffic"
)

// benchRows runs a short --direct bench (two 100 Mbit/s TBF links, tunbond
// with wrr) with a tool and returns its rows by method.
func benchRows(t *testing.T, tool, cc string) (*Report, map[string]BenchResult) {
	t.Helper()
	requireRoot(t)
	p, err := ParseLinks("100mbit/0ms,100mbit/0ms")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunBondBench(ctx, newID(t), BenchConfig{Profile: p, Duration: 2 * time.Second, Schedulers: []string{"wrr"},
		Direct: true, Tool: tool, CongestionControl: cc, Note: func(m string) { t.Log(m) }})
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]BenchResult{}
	for _, r := range rep.Results {
		t.Logf("%-12s %6.1f Mbit/s rtt %.1f/%.1f ms retrans %d shares %.2f subflows %d cpu %.0f%% %s%s",
			r.Method, r.GoodputMbps, r.RTTP50Ms, r.RTTP99Ms, r.Retransmits, r.LinkShare, r.Subflows, r.CPUPct, r.Error, r.Skipped)
		rows[r.Method] = r
	}
	return rep, rows
}

// TestBenchGoTool: with the default tool every row is measured by the Go
// tool, the MPTCP row with two subflows that both carry about half, and the
// requested congestion control is the report's.
func TestBenchGoTool(t *testing.T) {
	rep, rows := benchRows(t, "", "cubic")
	if rep.Tool != traffic.ToolGo || rep.CongestionControl != "cubic" {
		t.Errorf("tool %q cc %q, want go cubic", rep.Tool, rep.CongestionControl)
	}
	for _, m := range []string{"link-1", "link-2", "ecmp", "mptcp", "tunbond-wrr"} {
		r, ok := rows[m]
		if !ok || r.Error != "" || r.Skipped != "" || r.GoodputMbps < 80 || r.RTTP50Ms <= 0 || r.Retransmits < 0 {
			t.Errorf("%s: %+v", m, r)
		}
	}
	if r := rows["mptcp"]; r.Subflows != 2 || len(r.LinkShare) != 2 || r.LinkShare[1] < 0.3 || r.LinkShare[1] > 0.7 || r.GoodputMbps < 160 {
		t.Errorf("mptcp: %.1f Mbit/s, %d subflows, shares %v; want both links", r.GoodputMbps, r.Subflows, r.LinkShare)
	}
	if r := rows["tunbond-wrr"]; r.CPUPct <= 0 || r.GoodputMbps < 160 {
		t.Errorf("tunbond-wrr: %.1f Mbit/s, CPU %.0f%%", r.GoodputMbps, r.CPUPct)
	}
}

// TestBenchIperf3Tool: --tool iperf3 measures the rows it can serve; without
// mptcpize the MPTCP row is there and says why it was skipped.
func TestBenchIperf3Tool(t *testing.T) {
	labtest.RequireTool(t, "iperf3")
	rep, rows := benchRows(t, traffic.ToolIperf3, "")
	if rep.Tool != traffic.ToolIperf3 || rep.CongestionControl == "" {
		t.Errorf("tool %q cc %q", rep.Tool, rep.CongestionControl)
	}
	for _, m := range []string{"link-1", "link-2", "ecmp", "tunbond-wrr"} {
		if r, ok := rows[m]; !ok || r.Error != "" || r.GoodputMbps < 80 || r.RTTP50Ms <= 0 {
			t.Errorf("%s: %+v", m, r)
		}
	}
	r, ok := rows["mptcp"]
	if _, err := exec.LookPath("mptcpize"); err != nil {
		if !ok || !strings.Contains(r.Skipped, "mptcpize") || r.GoodputMbps != 0 {
			t.Errorf("without mptcpize, mptcp row %+v, want skipped naming mptcpize", r)
		}
	} else if !ok || r.Skipped != "" || r.Error != "" || r.GoodputMbps < 160 {
		t.Errorf("with mptcpize, mptcp row %+v", r)
	}
}

func TestBenchUnknownTool(t *testing.T) {
	p, _ := ParseLinks("100mbit/0ms")
	if _, err := RunBondBench(context.Background(), "x", BenchConfig{Profile: p, Duration: 2 * time.Second, Tool: "netperf"}); err == nil ||
		!strings.Contains(err.Error(), "netperf") {
		t.Fatalf("err %v", err)
	}
}
