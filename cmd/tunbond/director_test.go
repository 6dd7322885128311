package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/netns"
)

// startIn runs the binary in a namespace and returns once a line with want
// appears on its stderr; it is interrupted when the test ends.
func startIn(t *testing.T, ns *netns.Namespace, want string, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if err := lab.StartAndAwait(ns, cmd, want); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	return cmd
}

// TestDirectorCommands runs `tunbond director` with no services, fills it
// with `tunbond adm`, runs `tunbond realserver`, and serves a request;
// `adm -S` piped to `adm -R` on a second director gives the same save.
func TestDirectorCommands(t *testing.T) {
	requireRoot(t)
	bin := buildTunbond(t)
	n, err := lab.DirectorTopology(1).Build(netns.RunID())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := lab.PrepareDirectorNet(n); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "director.sock")
	write := func(name, body string) string {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(body), 0o600)
		return f
	}
	dcfg := write("director.yaml", fmt.Sprintf("local: %s\ncheck: {type: none}\ncontrol: {socket: %s}\n", lab.DirectorAddr, sock))
	startIn(t, n.NS("director"), "director started", bin, "director", "--config", dcfg)
	adm := func(input string, args ...string) string {
		cmd := exec.Command(bin, append([]string{"adm", "--socket", sock}, args...)...)
		cmd.Stdin = strings.NewReader(input)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("adm %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	adm("", "-A", "-t", lab.DirectorVIP+":80", "-s", "wlc")
	adm("", "-a", "-t", lab.DirectorVIP+":80", "-r", lab.RealAddr(0)+":80", "-i", "-w", "2")
	rcfg := write("rs.yaml", fmt.Sprintf("local: %s\ndirectors: [%s]\nvips: [%s]\n", lab.RealAddr(0), lab.DirectorAddr, lab.DirectorVIP))
	startIn(t, n.NS("rs0"), "real server agent started", bin, "realserver", "--config", rcfg)
	srv, err := lab.ServeHTTP(n.NS("rs0"), "rs0", "hello")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// The VIP route goes to the TUN once the service exists; the agent is up: serve.
	var body []byte
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := lab.HTTPClient(n.NS("client")).Get("http://" + lab.DirectorVIP + "/")
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no answer through the director: %v\n%s", err, adm("", "-L", "-n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(string(body), "rs0") {
		t.Fatalf("body %q", body)
	}
	list := adm("", "-L", "-n")
	if !strings.Contains(list, "TCP  "+lab.DirectorVIP+":80 wlc") || !strings.Contains(list, lab.RealAddr(0)+":80") {
		t.Fatalf("adm -L -n:\n%s", list)
	}
	save := adm("", "-S", "-n")
	sock2 := filepath.Join(dir, "second.sock")
	dcfg2 := write("d2.yaml", fmt.Sprintf("local: %s\ntun: {name: vs1}\ncheck: {type: none}\ncontrol: {socket: %s}\n", lab.DirectorAddr, sock2))
	startIn(t, n.NS("director"), "director started", bin, "director", "--config", dcfg2)
	cmd := exec.Command(bin, "adm", "--socket", sock2, "-R")
	cmd.Stdin = strings.NewReader(save)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("adm -R: %v %s", err, out)
	}
	again, _ := exec.Command(bin, "adm", "--socket", sock2, "-S", "-n").Output()
	if string(again) != save {
		t.Fatalf("restored save differs:\n%s\nwant\n%s", again, save)
	}
}

// TestLabDirector runs `tunbond lab director` briefly: every measurement
// gives a number (what the numbers should be is the benchmark's job).
func TestLabDirector(t *testing.T) {
	requireRoot(t)
	requireTool(t, "haproxy")
	bin := buildTunbond(t)
	out := filepath.Join(t.TempDir(), "director.json")
	cmd := exec.Command(bin, "lab", "director", "--duration", "2s", "--requests", "300", "--clients", "4", "--body", "65536", "--json", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	b, _ := os.ReadFile(out)
	var rep lab.DirectorReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range rep.Spread {
		total += n
	}
	if total != 300 || len(rep.Spread) != 3 || len(rep.Rows) != 2 || len(rep.Small) != 4 {
		t.Fatalf("report %+v", rep)
	}
	modes := map[string]int{}
	for _, r := range rep.Small {
		if r.Error != "" || r.PPS <= 0 || r.OfferedPPS <= 0 || r.CPUPct <= 0 {
			t.Fatalf("small-packet row %+v", r)
		}
		modes[r.Ingress+" "+r.Flows]++
	}
	if len(modes) != 4 || modes["tun existing"] != 1 || modes["tun new"] != 1 || modes["ring existing"] != 1 || modes["ring new"] != 1 { // both ingresses by default, existing and new flows each
		t.Fatalf("small-packet rows by ingress: %v", modes)
	}
	for _, r := range rep.Rows {
		if r.Error != "" || r.ReqPerS <= 0 {
			t.Fatalf("row %+v", r)
		}
	}
}

// roleProc is a role's process in a namespace with its stderr kept.
type roleProc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	exited chan error
}

func (p *roleProc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// startRole runs the binary in ns and returns once a line with want is on
// its stderr; it is interrupted when the test ends if still running.
func startRole(t *testing.T, ns *netns.Namespace, want, bin string, args ...string) *roleProc {
	t.Helper()
	p := &roleProc{cmd: exec.Command(bin, args...), exited: make(chan error, 1)}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ns.Start(p.cmd); err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		seen := false
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
			if !seen && strings.Contains(sc.Text(), want) {
				seen = true
				close(started)
			}
		}
		p.exited <- p.cmd.Wait()
	}()
	select {
	case <-started:
	case err := <-p.exited:
		t.Fatalf("%v did not start (%v):\n%s", args, err, p.log())
	case <-time.After(10 * time.Second):
		t.Fatalf("%v did not start:\n%s", args, p.log())
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Signal(os.Interrupt)
		}
	})
	return p
}

// wait returns the process's exit code once it ends.
func (p *roleProc) wait(t *testing.T, what string) int {
	t.Helper()
	select {
	case err := <-p.exited:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still running:\n%s", what, p.log())
	}
	return -1
}

func sysctlIn(t *testing.T, ns *netns.Namespace, key string) string {
	t.Helper()
	var v string
	if err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/" + key)
		v = strings.TrimSpace(string(b))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

func setSysctlIn(t *testing.T, ns *netns.Namespace, key, v string) {
	t.Helper()
	if err := ns.Do(func() error { return os.WriteFile("/proc/sys/net/"+key, []byte(v), 0o644) }); err != nil {
		t.Fatal(err)
	}
}

// roleConfigs writes a director config (one service, no checks) and a
// real server config for the director topology.
func roleConfigs(t *testing.T) (dir, dcfg, rcfg string) {
	dir = t.TempDir()
	dcfg = filepath.Join(dir, "director.yaml")
	rcfg = filepath.Join(dir, "rs.yaml")
	os.WriteFile(dcfg, []byte(fmt.Sprintf("local: %s\ncheck: {type: none}\ncontrol: {socket: %s}\nservices:\n  - {proto: tcp, vip: %s:80, reals: [{address: %s:80}]}\n",
		lab.DirectorAddr, filepath.Join(dir, "director.sock"), lab.DirectorVIP, lab.RealAddr(0))), 0o600)
	os.WriteFile(rcfg, []byte(fmt.Sprintf("local: %s\ndirectors: [%s]\nvips: [%s]\n", lab.RealAddr(0), lab.DirectorAddr, lab.DirectorVIP)), 0o600)
	return
}

// TestDirectorAndRealServerExitWhenTheirTUNIsDeleted: `ip link del` of the
// TUN under a running director or agent ends it with a log line naming the
// TUN and exit status 1 (before, it went on looking healthy).
func TestDirectorAndRealServerExitWhenTheirTUNIsDeleted(t *testing.T) {
	requireRoot(t)
	bin := buildTunbond(t)
	n, err := lab.DirectorTopology(1).Build(netns.RunID())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	_, dcfg, rcfg := roleConfigs(t)
	for _, tc := range []struct {
		ns, role, cfg, started, tun, stopped string
	}{
		{"director", "director", dcfg, "director started", "vs0", "director stopped"},
		{"rs0", "realserver", rcfg, "real server agent started", "vip0", "real server agent stopped"},
	} {
		ns := n.NS(tc.ns)
		p := startRole(t, ns, tc.started, bin, tc.role, "--config", tc.cfg)
		l, err := ns.NL.LinkByName(tc.tun)
		if err != nil {
			t.Fatal(err)
		}
		if err := ns.NL.LinkDel(l); err != nil {
			t.Fatal(err)
		}
		if code := p.wait(t, tc.role+" with its TUN deleted"); code != 1 {
			t.Fatalf("%s exited %d, want 1:\n%s", tc.role, code, p.log())
		}
		if log := p.log(); !strings.Contains(log, tc.stopped) || !strings.Contains(log, "tun "+tc.tun) {
			t.Fatalf("%s: no log line naming the TUN:\n%s", tc.role, log)
		}
	}
}

// TestDirectorAndRealServerStopOnSIGHUP: SIGHUP stops both cleanly (exit
// 0) and leaves the host as it was: the director's VIP route and admin
// socket gone; the agent's VIP gone and a strict all.rp_filter untouched
// throughout (the agent loosens its TUN's own to 2 alone).
func TestDirectorAndRealServerStopOnSIGHUP(t *testing.T) {
	requireRoot(t)
	bin := buildTunbond(t)
	n, err := lab.DirectorTopology(1).Build(netns.RunID())
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	dir, dcfg, rcfg := roleConfigs(t)
	rs := n.NS("rs0")
	setSysctlIn(t, rs, "ipv4/conf/all/rp_filter", "1")
	agent := startRole(t, rs, "real server agent started", bin, "realserver", "--config", rcfg)
	if v := sysctlIn(t, rs, "ipv4/conf/all/rp_filter"); v != "1" {
		t.Fatalf("all.rp_filter %s while the agent runs, want 1 as the host had it (only the TUN's own is loosened)", v)
	}
	if v := sysctlIn(t, rs, "ipv4/conf/vip0/rp_filter"); v != "2" {
		t.Fatalf("vip0.rp_filter %s while the agent runs, want 2 (loose on the TUN alone)", v)
	}
	d := startRole(t, n.NS("director"), "director started", bin, "director", "--config", dcfg)
	vipRoute := func() bool {
		routes, _ := n.NS("director").NL.RouteList(nil, netlink.FAMILY_V4)
		for _, r := range routes {
			if r.Dst != nil && r.Dst.IP.String() == lab.DirectorVIP {
				return true
			}
		}
		return false
	}
	if !vipRoute() {
		t.Fatal("no route for the VIP while the director runs")
	}
	for _, p := range []*roleProc{d, agent} {
		p.cmd.Process.Signal(syscall.SIGHUP)
		if code := p.wait(t, "SIGHUP"); code != 0 {
			t.Fatalf("exit %d on SIGHUP:\n%s", code, p.log())
		}
	}
	if vipRoute() {
		t.Fatal("the VIP's route outlived the director")
	}
	if _, err := os.Stat(filepath.Join(dir, "director.sock")); err == nil {
		t.Fatal("the admin socket outlived the director")
	}
	if v := sysctlIn(t, rs, "ipv4/conf/all/rp_filter"); v != "1" {
		t.Fatalf("all.rp_filter %s after the agent, want 1 as before", v)
	}
	if _, err := rs.NL.LinkByName("vip0"); err == nil {
		t.Fatal("vip0 outlived the agent")
	}
}
