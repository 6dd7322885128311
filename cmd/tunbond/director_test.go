package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
)

// startIn runs the binary in a namespace and returns once a line with want
// appears on its stderr; it is interrupted when the test ends.
func startIn(t *testing.T, ns *lab.Namespace, want string, bin string, args ...string) *exec.Cmd {
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
	n, err := lab.DirectorTopology(1).Build(lab.RunID())
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
	if total != 300 || len(rep.Spread) != 3 || rep.SmallPPS <= 0 || len(rep.Rows) != 2 {
		t.Fatalf("report %+v", rep)
	}
	for _, r := range rep.Rows {
		if r.Error != "" || r.ReqPerS <= 0 {
			t.Fatalf("row %+v", r)
		}
	}
}
