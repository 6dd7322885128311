package e2e

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/tunbond/tunbond/endpoints/realserver"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/tunnel/encap"
)

// bgpLab is two directors announcing one VIP over BGP to a BIRD router with
// ECMP, two real servers behind them, and a client behind the router.
type bgpLab struct {
	t         *testing.T
	net       *netns.Net
	bin, dir  string
	directors []*exec.Cmd
	healthy   []*healthSwitch
}

// healthSwitch is a real server's HTTP service that can be made to fail
// its checks (and its clients).
type healthSwitch struct {
	mu   sync.Mutex
	down bool
}

func (h *healthSwitch) set(down bool) { h.mu.Lock(); h.down = down; h.mu.Unlock() }
func (h *healthSwitch) isDown() bool  { h.mu.Lock(); defer h.mu.Unlock(); return h.down }

// slowBody is what /big answers: size bytes, 64 KiB at a time, 10 ms apart
// (about 6 MB/s), so a download outlasts a director's stop.
const slowChunk = 64 << 10

func serveRealServer(t *testing.T, ns *netns.Namespace, name string, h *healthSwitch) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:80"); return }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.isDown() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("X-Real-Server", name)
		if r.URL.Path != "/big" {
			io.WriteString(w, name+"\n")
			return
		}
		chunk := bytes.Repeat([]byte{'b'}, slowChunk)
		for i := 0; i < 48; i++ { // 3 MiB over about half a second
			if _, err := w.Write(chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(10 * time.Millisecond)
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

func startBGPLab(t *testing.T) *bgpLab {
	t.Helper()
	requireRoot(t)
	bird := labtest.RequireTool(t, "bird")
	l := &bgpLab{t: t, dir: t.TempDir()}
	var err error
	if l.net, err = lab.BGPDirectorTopology(2, 2).Build(newID(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.net.Close() })
	if err := lab.PrepareDirectorNet(l.net); err != nil {
		t.Fatal(err)
	}
	for ns, kv := range map[string][][2]string{
		"router":    {{"ipv4/fib_multipath_hash_policy", "1"}}, // ECMP by the 5-tuple: the clients' flows spread over the directors
		"director1": {{"ipv4/ip_forward", "1"}, {"ipv4/conf/all/rp_filter", "0"}},
	} {
		for _, x := range kv {
			if err := l.net.NS(ns).Do(func() error { return os.WriteFile("/proc/sys/net/"+x[0], []byte(x[1]), 0o644) }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The router: BIRD with a session per director and ECMP into its kernel
	// table. A session that ends in an error (the hold timer running out)
	// waits out BIRD's error wait time before BIRD takes a connection again:
	// 60 s by default, 1 s here.
	conf := "log stderr all;\nrouter id 10.20.0.1;\nprotocol device { scan time 1; }\n" +
		"protocol kernel { ipv4 { import none; export all; }; merge paths yes; scan time 1; }\n"
	for i := 0; i < 2; i++ {
		conf += fmt.Sprintf("protocol bgp d%d { local %s as 65000; neighbor %s as 65001; hold time 9; keepalive time 3; connect retry time 1; error wait time 1, 5; ipv4 { import all; export none; }; }\n",
			i, lab.BGPRouterAddr(i), lab.BGPDirectorAddr(i))
	}
	cf := filepath.Join(l.dir, "bird.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	birdCmd := exec.Command(bird, "-f", "-c", cf, "-s", filepath.Join(l.dir, "bird.ctl"))
	var birdOut bytes.Buffer
	birdCmd.Stdout, birdCmd.Stderr = &birdOut, &birdOut
	if err := l.net.NS("router").Start(birdCmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		birdCmd.Process.Kill()
		birdCmd.Wait()
		if t.Failed() {
			t.Logf("bird:\n%s", birdOut.String())
		}
	})
	// The real servers take both directors' tunnels.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < 2; i++ {
		ns := l.net.NS(fmt.Sprintf("rs%d", i))
		a, err := realserver.Start(realserver.Config{TUN: "vip0", Local: netip.MustParseAddr(lab.RealAddr(i)),
			Directors: []netip.Addr{netip.MustParseAddr(lab.BGPDirectorAddr(0)), netip.MustParseAddr(lab.BGPDirectorAddr(1))},
			VIPs:      []netip.Addr{netip.MustParseAddr(lab.DirectorVIP)}, Encap: encap.IPIP{}}, realserver.Deps{Host: ns.Host(), Log: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		h := &healthSwitch{}
		l.healthy = append(l.healthy, h)
		serveRealServer(t, ns, fmt.Sprintf("rs%d", i), h)
	}
	l.bin = labtest.BuildTunbond(t)
	l.directors = make([]*exec.Cmd, 2)
	for i := range l.directors {
		l.startDirector(i)
	}
	t.Cleanup(func() {
		for _, c := range l.directors {
			if c != nil && c.ProcessState == nil {
				c.Process.Kill()
				c.Wait()
			}
		}
	})
	return l
}

// startDirector runs `tunbond director` i in its namespace, as a user does.
func (l *bgpLab) startDirector(i int) {
	l.t.Helper()
	cfg := fmt.Sprintf(`tun: {name: vs0}
local: %s
encap: ipip
check: {type: http, path: /, interval: 200ms, timeout: 500ms, rise: 1, fall: 2}
services:
  - {proto: tcp, vip: "%s:80", scheduler: mh, reals: [{address: "%s:80"}, {address: "%s:80"}]}
bgp: {asn: 65001, router_id: %s, peers: [{address: %s, asn: 65000, local: %s}]}
control: {socket: %s}
`, lab.BGPDirectorAddr(i), lab.DirectorVIP, lab.RealAddr(0), lab.RealAddr(1), lab.BGPDirectorAddr(i), lab.BGPRouterAddr(i),
		lab.BGPDirectorAddr(i), filepath.Join(l.dir, fmt.Sprintf("d%d.sock", i)))
	f := filepath.Join(l.dir, fmt.Sprintf("director%d.yaml", i))
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command(l.bin, "director", "--config", f)
	out, _ := os.Create(filepath.Join(l.dir, fmt.Sprintf("director%d.log", i)))
	cmd.Stdout, cmd.Stderr = out, out
	if err := l.net.NS(lab.BGPDirectorNS(i)).Start(cmd); err != nil {
		l.t.Fatal(err)
	}
	l.directors[i] = cmd
}

// nextHops is what the router's kernel table holds for the VIP.
func (l *bgpLab) nextHops() []string {
	ns := l.net.NS("router")
	_, dst, _ := net.ParseCIDR(lab.DirectorVIP + "/32")
	routes, err := ns.NL.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil {
		l.t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		if r.Gw != nil {
			out = append(out, r.Gw.String())
		}
		for _, p := range r.MultiPath {
			out = append(out, p.Gw.String())
		}
	}
	return out
}

// awaitNextHops waits until the router's route to the VIP has n next hops
// and returns how long that took.
func (l *bgpLab) awaitNextHops(n int, within time.Duration, what string) time.Duration {
	l.t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(l.nextHops()) != n {
		if time.Since(start) > within {
			l.logDirectors()
			l.t.Fatalf("%s: the router's next hops to the VIP are %v after %v, want %d", what, l.nextHops(), within, n)
		}
		<-tick.C
	}
	return time.Since(start)
}

func (l *bgpLab) logDirectors() {
	for i := range l.directors {
		b, _ := os.ReadFile(filepath.Join(l.dir, fmt.Sprintf("director%d.log", i)))
		l.t.Logf("director %d:\n%s", i, b)
	}
}

// requests makes n requests through the VIP and returns the first error.
func (l *bgpLab) requests(n int) error {
	c := lab.HTTPClient(l.net.NS("client"))
	for i := 0; i < n; i++ {
		resp, err := c.Get("http://" + lab.DirectorVIP + "/")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("request %d: %s", i, resp.Status)
		}
	}
	return nil
}

// TestDirectorsShareAVIPOverBGP: two directors announce the VIP to a BIRD
// router, which spreads the clients' flows over them by ECMP. A director
// stopped with SIGTERM withdraws the VIP at once; one killed with SIGKILL
// loses it at once too (its kernel closes the TCP session); one that goes
// silent (frozen with SIGSTOP: no more keepalives, its kernel keeps the
// session open) loses it when the router's hold time (9 s) runs out, not
// sooner, and announces it again once thawed (SIGCONT) and reconnected.
// Requests succeed throughout; downloads under mh cross a director's stop;
// a VIP whose servers all fail their checks is withdrawn and comes back.
func TestDirectorsShareAVIPOverBGP(t *testing.T) {
	l := startBGPLab(t)
	l.awaitNextHops(2, 20*time.Second, "both directors announcing")
	t.Logf("router's next hops to %s: %v", lab.DirectorVIP, l.nextHops())
	if err := l.requests(20); err != nil {
		t.Fatal(err)
	}

	// Slow downloads from several source ports (some through each
	// director), then director 0 stops: its flows move to director 1,
	// which takes them mid-connection (mh) to the same real servers.
	type result struct {
		n   int64
		err error
	}
	done := make(chan result, 8)
	var got atomic.Int64
	c := lab.HTTPClient(l.net.NS("client"))
	c.Timeout = 30 * time.Second
	for i := 0; i < 8; i++ {
		go func() {
			resp, err := c.Get("http://" + lab.DirectorVIP + "/big")
			if err != nil {
				done <- result{err: err}
				return
			}
			defer resp.Body.Close()
			n, err := io.Copy(countingWriter{&got}, resp.Body)
			done <- result{n, err}
		}()
	}
	for tick := time.NewTicker(5 * time.Millisecond); got.Load() < 8*2*slowChunk; <-tick.C { // the downloads under way (each lasts about half a second)
	}
	out, err := exec.Command(l.bin, "adm", "--socket", filepath.Join(l.dir, "d0.sock"), "-L", "-n", "-c").CombinedOutput()
	onD0 := 0 // open connections (the earlier requests' are closing)
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, lab.DirectorVIP+":80") && (strings.Contains(line, "ESTABLISHED") || strings.Contains(line, "UNCONFIRMED")) {
			onD0++
		}
	}
	if err != nil || onD0 == 0 {
		t.Fatalf("no download goes through director 0 (adm -L -c: %v):\n%s", err, out)
	}
	t.Logf("%d of the 8 downloads go through director 0", onD0)
	stopped := time.Now()
	l.directors[0].Process.Signal(syscall.SIGTERM)
	took := l.awaitNextHops(1, 5*time.Second, "director 0 withdrawn after SIGTERM")
	t.Logf("SIGTERM: the VIP's route lost director 0 %v after the signal", took.Round(time.Millisecond))
	for i := 0; i < 8; i++ {
		r := <-done
		if r.err != nil || r.n != 48*slowChunk {
			t.Errorf("download %d across director 0's stop: %d bytes, %v", i, r.n, r.err)
		}
	}
	if err := l.directors[0].Wait(); err != nil {
		t.Errorf("director 0 after SIGTERM: %v", err)
	}
	t.Logf("downloads done %v after director 0 was stopped", time.Since(stopped).Round(time.Millisecond))
	if err := l.requests(20); err != nil {
		t.Fatalf("with one director: %v", err)
	}

	// Director 0 back; director 1 killed: its kernel closes the session,
	// so the router drops its route at once.
	l.startDirector(0)
	l.awaitNextHops(2, 20*time.Second, "director 0 back")
	l.directors[1].Process.Kill()
	l.directors[1].Wait()
	took = l.awaitNextHops(1, 15*time.Second, "director 1 withdrawn after SIGKILL")
	t.Logf("SIGKILL: the VIP's route lost director 1 %v after the kill (its kernel closed the session; a silent death waits for the hold time: below)", took.Round(time.Millisecond))
	if err := l.requests(20); err != nil {
		t.Fatalf("after the kill: %v", err)
	}

	// Director 1 back; director 0 frozen (SIGSTOP): it sends no more
	// keepalives but its kernel keeps the session open, so only the
	// router's hold timer notices. BIRD restarts it on each message at 9 s
	// less up to a quarter (the jitter it gives every BGP timer: 6.75 to
	// 9 s), and the director sends a keepalive every 3 s, so the route
	// goes 3.75 to 9 s after the freeze: not before 3 s (it was the hold
	// timer) nor after 11 s. Requests succeed meanwhile (the router no
	// longer sends to it).
	// Thawed (SIGCONT), director 0 reads the router's notification, waits
	// out gobgp's idle hold time (5 s) and connects again.
	l.startDirector(1)
	l.awaitNextHops(2, 20*time.Second, "director 1 back")
	frozen := l.directors[0].Process
	t.Cleanup(func() { frozen.Signal(syscall.SIGCONT) }) // a failing test leaves no stopped process (the lab's cleanup kills it)
	if err := frozen.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	took = l.awaitNextHops(1, 15*time.Second, "director 0 withdrawn after SIGSTOP")
	t.Logf("SIGSTOP: the VIP's route lost director 0 %v after the freeze (the router's hold time ran out)", took.Round(time.Millisecond))
	if took < 3*time.Second || took > 11*time.Second {
		t.Errorf("SIGSTOP: director 0 withdrawn %v after the freeze, want the hold time's 3.75 to 9 s (3 to 11 s allowed)", took.Round(time.Millisecond))
	}
	if hops := l.nextHops(); len(hops) != 1 || hops[0] != lab.BGPDirectorAddr(1) {
		t.Errorf("SIGSTOP: the router's next hops are %v, want director 1's %s", hops, lab.BGPDirectorAddr(1))
	}
	if err := l.requests(20); err != nil {
		t.Fatalf("with director 0 frozen: %v", err)
	}
	if err := frozen.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	took = l.awaitNextHops(2, 30*time.Second, "director 0 back after SIGCONT")
	t.Logf("SIGCONT: director 0 announced again %v after the thaw", took.Round(time.Millisecond))
	if err := l.requests(20); err != nil {
		t.Fatalf("after the thaw: %v", err)
	}

	// Every real server fails its checks: the VIP is withdrawn; one
	// recovers: it is announced again.
	for _, h := range l.healthy {
		h.set(true)
	}
	took = l.awaitNextHops(0, 10*time.Second, "the VIP withdrawn with every server down")
	t.Logf("every server down: withdrawn %v later", took.Round(time.Millisecond))
	l.healthy[1].set(false)
	took = l.awaitNextHops(2, 10*time.Second, "the VIP back with a server up") // from both directors
	t.Logf("a server back: announced %v later", took.Round(time.Millisecond))
	if err := l.requests(10); err != nil {
		t.Fatalf("after the recovery: %v", err)
	}
	if out, err := exec.Command(l.bin, "adm", "--socket", filepath.Join(l.dir, "d0.sock"), "--bgp").CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "established") {
		t.Errorf("adm --bgp: %v\n%s", err, out)
	}
}

// countingWriter counts what it is given into n.
type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(p []byte) (int, error) { w.n.Add(int64(len(p))); return len(p), nil }
