package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

func requireRoot(t *testing.T) { labtest.RequireRoot(t) }

// requireTool skips a test whose optional tool is not installed, with the
// reason, or fails it when CI is set.
func requireTool(t *testing.T, name string) { t.Helper(); labtest.RequireTool(t, name) }

// TestLabBondJSON is the CI run of the main command:
// tunbond lab bond --profile symmetric --duration 3s --json out.json
// Every row comes from the built-in Go tool (no iperf3 or mptcpize needed);
// the MPTCP row has a subflow per link and both links carry it.
func TestLabBondJSON(t *testing.T) {
	requireRoot(t)
	out := filepath.Join(t.TempDir(), "out.json")
	plot := filepath.Join(t.TempDir(), "out.svg")
	if err := runLab([]string{"bond", "--profile", "symmetric", "--duration", "3s", "--json", out, "--plot", plot}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Profile string `json:"profile"`
		Tool    string `json:"tool"`
		CC      string `json:"congestion_control"`
		Links   []struct {
			RateMbit float64 `json:"rate_mbit"`
		} `json:"links"`
		Results []struct {
			Method      string    `json:"method"`
			GoodputMbps float64   `json:"goodput_mbps"`
			SumPct      float64   `json:"sum_pct"`
			VsBestLink  float64   `json:"vs_best_link"`
			RTTP50      float64   `json:"rtt_p50_ms"`
			RTTP99      float64   `json:"rtt_p99_ms"`
			Retransmits *int64    `json:"retransmits"`
			LinkShare   []float64 `json:"link_share"`
			Subflows    int       `json:"subflows"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Profile != "symmetric" || len(rep.Links) != 2 || rep.Links[0].RateMbit != 100 {
		t.Fatalf("profile %q links %+v", rep.Profile, rep.Links)
	}
	if rep.Tool != traffic.ToolGo || rep.CC == "" {
		t.Errorf("tool %q congestion control %q, want go and a name", rep.Tool, rep.CC)
	}
	want := []string{"link-1", "link-2", "ecmp", "mptcp", "wireguard-go", "tunbond-adaptive", "tunbond-rr", "tunbond-wrr", "tunbond-flowhash", "tunbond-delay"}
	var got []string
	for _, r := range rep.Results {
		got = append(got, r.Method)
		if r.GoodputMbps <= 0 || r.SumPct <= 0 || r.VsBestLink <= 0 || r.RTTP50 <= 0 || r.RTTP99 < r.RTTP50 || r.Retransmits == nil {
			t.Errorf("row %+v", r)
		}
		if r.Method == "mptcp" && (r.Subflows != 2 || len(r.LinkShare) != 2 || r.LinkShare[0] < 0.3 || r.LinkShare[1] < 0.3) {
			t.Errorf("mptcp: %d subflows, link shares %v; want 2 subflows over both links", r.Subflows, r.LinkShare)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("methods %v, want %v", got, want)
	}
	svg, err := os.ReadFile(plot)
	if err != nil || !strings.Contains(string(svg), "<svg") || !strings.Contains(string(svg), "tunbond-wrr") {
		t.Fatalf("plot: %v", err)
	}
}

// TestLabBondFault: tunbond lab bond --fault blackhole:link1@2s-4s
// --duration 6s --schedulers adaptive: link-1 alone stops for the blackhole
// (a goodput gap), every row has the fault's fields, and the report names
// the fault.
func TestLabBondFault(t *testing.T) {
	requireRoot(t)
	out := filepath.Join(t.TempDir(), "out.json")
	if err := runLab([]string{"bond", "--profile", "symmetric", "--duration", "6s", "--schedulers", "adaptive",
		"--fault", "blackhole:link1@2s-4s", "--json", out}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Faults  []string `json:"faults"`
		Results []struct {
			Method       string   `json:"method"`
			Error        string   `json:"error"`
			Skipped      string   `json:"skipped"`
			LongestGapMs *float64 `json:"longest_gap_ms"`
			RTO          *int64   `json:"rto"`
			During       *float64 `json:"rate_during_fault_mbps"`
			After        *float64 `json:"rate_after_fault_mbps"`
			LoadMs       *float64 `json:"latency_under_load_ms"`
			IdleMs       float64  `json:"idle_rtt_ms"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Faults, ",") != "blackhole:link1@2s-4s" {
		t.Errorf("faults %v", rep.Faults)
	}
	for _, r := range rep.Results {
		if r.Skipped != "" {
			continue
		}
		if r.Error != "" || r.LongestGapMs == nil || r.RTO == nil || *r.RTO < 0 || r.During == nil || r.After == nil || r.LoadMs == nil || r.IdleMs <= 0 {
			t.Errorf("%s: %s", r.Method, b)
			continue
		}
		t.Logf("%-12s gap %4.0f ms, %d RTOs, %.1f Mbit/s in the fault, %.1f after, +%.1f ms under load",
			r.Method, *r.LongestGapMs, *r.RTO, *r.During, *r.After, *r.LoadMs)
		if r.Method == "link-1" && (*r.LongestGapMs <= 0 || *r.RTO == 0) {
			t.Errorf("link-1 alone: gap %v ms, %d RTOs through a 2 s blackhole; want a gap and an RTO", *r.LongestGapMs, *r.RTO)
		}
	}
}

func TestLabClearErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"bond", "--profile", "nope"}, `no profile "nope"`},
		{[]string{"bond", "--links", "fast/10ms"}, "rate"},
		{[]string{"bond", "--schedulers", "best"}, "not a path scheduler"},
		{[]string{"bond", "--plot", "x.png"}, ".svg"},
		{[]string{"bond", "--tool", "netperf"}, `no traffic tool "netperf"`},
		{[]string{"bond", "--fault", "blackhole:link1"}, `--fault: fault "blackhole:link1": no @START`},
		{[]string{"bond", "--fault", "down:link1@2s", "--tool", "iperf3"}, "--fault needs --tool go"},
		{[]string{"bond", "--transports", "gre,tcp"}, `--transports: "tcp" is not a transport variant (valid: gre, udp, gre+auth, udp+auth, gre+encrypt, udp+encrypt; each may end in +l2)`},
		{[]string{"bond", "--transports", "udp+sign"}, `--transports: "udp+sign" is not a transport variant (valid: `},
		{[]string{"bond", "--transports", "udp,udp"}, `--transports: "udp" is named twice`},
		{[]string{"other"}, "usage"},
	} {
		err := runLab(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want %q", tt.args, err, tt.want)
		}
	}
}

// buildTunbond builds the binary for the tests that run it as a process.
func buildTunbond(t *testing.T) string { return labtest.BuildTunbond(t) }

// runUntilMeasuring starts `tunbond lab bond --tool TOOL` and returns once
// it measures (for iperf3, once an iperf3 runs).
func runUntilMeasuring(t *testing.T, bin, tool string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "lab", "bond", "--duration", "20s", "--tool", tool)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "measuring link-1") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	// The Go tool's flow runs in the process; an iperf3 is a child to await.
	deadline := time.Now().Add(10 * time.Second)
	for tool == traffic.ToolIperf3 && time.Now().Before(deadline) && len(childrenOf(cmd.Process.Pid)) == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if tool == traffic.ToolIperf3 && len(childrenOf(cmd.Process.Pid)) == 0 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("no iperf3 started within 10 s of measuring")
	}
	return cmd
}

func namespacesOf(pid int) []string {
	ents, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tb-"+itoa(pid)+"-") {
			out = append(out, e.Name())
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == itoa(pid) {
			if c, err := strconv.Atoi(e.Name()); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// TestLabTeardown: a run stopped with Ctrl-C (SIGINT) in the middle leaves
// no namespace and no process; a run killed with SIGKILL leaves no process,
// and its namespaces are removed by the next run (netns.CleanStale); with
// each traffic tool (iperf3's are child processes).
func TestLabTeardown(t *testing.T) {
	requireRoot(t)
	bin := buildTunbond(t)
	for _, tool := range traffic.Tools {
		t.Run(tool, func(t *testing.T) {
			if tool == traffic.ToolIperf3 {
				labtest.RequireTool(t, "iperf3")
			}
			testLabTeardown(t, bin, tool)
		})
	}
}

func testLabTeardown(t *testing.T, bin, tool string) {
	cmd := runUntilMeasuring(t, bin, tool)
	pid := cmd.Process.Pid
	kids := childrenOf(pid)
	if len(namespacesOf(pid)) == 0 {
		t.Fatal("the run made no namespaces?")
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("lab did not stop on SIGINT")
	}
	if left := namespacesOf(pid); len(left) > 0 {
		t.Errorf("after SIGINT, namespaces left: %v", left)
	}
	for _, k := range kids {
		if syscall.Kill(k, 0) == nil {
			t.Errorf("after SIGINT, child %d still runs", k)
		}
	}

	cmd = runUntilMeasuring(t, bin, tool)
	pid = cmd.Process.Pid
	kids = childrenOf(pid)
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for _, k := range kids {
		for syscall.Kill(k, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // the kernel delivers the parent-death signal
		}
		if syscall.Kill(k, 0) == nil {
			t.Errorf("after SIGKILL, child %d still runs", k)
		}
	}
	// Another package's lab run (go test runs packages at once) may clean
	// the dead run's namespaces first: what counts is that none is left.
	stale := namespacesOf(pid)
	if n, err := netns.CleanStale(); err != nil || n == 0 && len(stale) > 0 && len(namespacesOf(pid)) == len(stale) {
		t.Errorf("CleanStale removed %d namespaces of %v: %v", n, stale, err)
	}
	if left := namespacesOf(pid); len(left) > 0 {
		t.Errorf("after SIGKILL and CleanStale, namespaces left: %v", left)
	}
}

// TestPrintReportVariants: a TCP row of the udp transport variant stays in
// the TCP table (only its UDP row goes to the UDP table), CPU s/Gbit is
// printed, and ratios that were not reported are dashes.
func TestPrintReportVariants(t *testing.T) {
	rep := &lab.Report{Results: []lab.BenchResult{
		{Method: "tunbond-rr/udp", Transport: "udp", GoodputMbps: 2000, CPUPct: 100, CPUSPerGbit: 0.5, Retransmits: 0, RTO: 0, LinkShare: []float64{0.5, 0.5}},
		{Method: "tunbond-rr/udp/udp", Transport: "udp", GoodputMbps: 90, UDPStats: &lab.UDPStats{RateMbit: 100}},
	}}
	var b strings.Builder
	printReport(&b, rep)
	tcp, udp, ok := strings.Cut(b.String(), "\n\n")
	if !ok {
		t.Fatalf("no UDP table:\n%s", b.String())
	}
	lines := strings.Split(tcp, "\n")
	if f := strings.Fields(lines[len(lines)-1]); !strings.Contains(lines[0], "CPU s/Gbit") || len(f) < 4 ||
		f[0] != "tunbond-rr/udp" || f[1] != "2000.0" || f[2] != "-" || f[3] != "-" || !strings.Contains(tcp, " 0.50 ") {
		t.Errorf("TCP table:\n%s", tcp)
	}
	if strings.Contains(tcp, "tunbond-rr/udp/udp") || !strings.Contains(udp, "tunbond-rr/udp/udp") || strings.Count(udp, "tunbond-rr/udp") != 1 {
		t.Errorf("UDP table:\n%s", udp)
	}
}
