package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/tunnel/header"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/endpoints/realserver"
)

func startDirectorLab(t *testing.T, s lab.DirectorSpec) *lab.DirectorLab {
	t.Helper()
	requireRoot(t)
	l, err := lab.StartDirectorLab(newID(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestDirectorHTTPSpreadAndDirectReturn: 3000 HTTP requests, a new
// connection each, to the VIP: rr spreads them within 1%, every response
// comes from its real server straight to the client, not via the director.
// TestDirectorHTTPSpreadAndDirectReturn: requests through each ingress
// (the TUN; the packet ring) are spread evenly, and the responses do not
// pass through the director.
func TestDirectorHTTPSpreadAndDirectReturn(t *testing.T) {
	for _, ingress := range []string{"tun", "ring"} {
		t.Run(ingress, func(t *testing.T) { testHTTPSpreadAndDirectReturn(t, ingress) })
	}
}

func testHTTPSpreadAndDirectReturn(t *testing.T, ingress string) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 3, Scheduler: "rr", Body: 20000, Ingress: ingress})
	c := l.Client()
	eth, _ := l.Net.NS("director").NL.LinkByName("eth0")
	rx0 := eth.Attrs().Statistics.RxBytes
	count := map[string]int{}
	const n = 3000
	var bodyBytes int64
	for i := 0; i < n; i++ {
		resp, err := c.Get(fmt.Sprintf("http://%s/", lab.DirectorVIP))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d body: %v", i, err)
		}
		bodyBytes += int64(len(b))
		count[resp.Header.Get("X-Real-Server")]++
	}
	for i := 0; i < 3; i++ {
		got := count[fmt.Sprintf("rs%d", i)]
		if d := float64(got)/n - 1.0/3; d > 0.01 || d < -0.01 {
			t.Errorf("rs%d served %d of %d", i, got, n)
		}
	}
	eth, _ = l.Net.NS("director").NL.LinkByName("eth0")
	rx := eth.Attrs().Statistics.RxBytes - rx0
	t.Logf("served %v; the director received %d bytes while the client got %d bytes of bodies", count, rx, bodyBytes)
	if rx > uint64(bodyBytes)/10 {
		t.Fatalf("the director received %d bytes for %d bytes of responses: replies pass through it", rx, bodyBytes)
	}
}

func get(t *testing.T, c *http.Client) (string, error) {
	resp, err := c.Get(fmt.Sprintf("http://%s/", lab.DirectorVIP))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	return resp.Header.Get("X-Real-Server"), nil
}

func TestDirectorWRRByWeight(t *testing.T) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 3, Scheduler: "wrr", Weights: []int{3, 2, 1}})
	c := l.Client()
	count := map[string]int{}
	const n = 3000
	for i := 0; i < n; i++ {
		who, err := get(t, c)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		count[who]++
	}
	for i, w := range []float64{3, 2, 1} {
		got := float64(count[fmt.Sprintf("rs%d", i)]) / n
		if d := got - w/6; d > 0.02 || d < -0.02 {
			t.Errorf("rs%d served %.3f, want %.3f ±2%%", i, got, w/6)
		}
	}
}

// TestDirectorLongConnectionStays: a connection keeps its server while
// weights change and servers are added.
func TestDirectorLongConnectionStays(t *testing.T) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 3, Scheduler: "wlc"})
	var conn net.Conn
	if err := l.Net.NS("client").Do(func() (err error) { conn, err = net.Dial("tcp4", lab.DirectorVIP+":80"); return }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() string {
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Header.Get("X-Real-Server")
	}
	first := ask()
	idx := first[len(first)-1] - '0'
	for _, cmd := range []string{
		fmt.Sprintf("-e -t %s:80 -r %s:80 -w 0", lab.DirectorVIP, lab.RealAddr(int(idx))),
		fmt.Sprintf("-e -t %s:80 -r %s:80 -w 9", lab.DirectorVIP, lab.RealAddr(int(idx+1)%3)),
		fmt.Sprintf("-a -t %s:80 -r 10.30.9.9:80 -w 5", lab.DirectorVIP),
	} {
		if _, err := l.Director.Admin(strings.Fields(cmd), "", time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := ask(); got != first {
			t.Fatalf("after %q the connection moved from %s to %s", cmd, first, got)
		}
	}
}

// TestDirectorHealthCheck: a stopped HTTP service leaves the rotation
// within interval × fall, after which no request fails; restarted, it is back.
func TestDirectorHealthCheck(t *testing.T) {
	check := director.Check{Type: "http", Path: "/", Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2}
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 3, Scheduler: "rr", Check: check})
	c := l.Client()
	if err := l.StopServer(1); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	// Await the director's verdict (interval × fall), then no request may fail.
	vip := netip.MustParseAddrPort(lab.DirectorVIP + ":80")
	rip := netip.MustParseAddrPort(lab.RealAddr(1) + ":80")
	deadline := stopped.Add(check.Interval*time.Duration(check.Fall) + time.Second)
	for l.Director.RealUp(6, vip, rip) {
		if time.Now().After(deadline) {
			t.Fatal("stopped server still in rotation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(stopped)
	t.Logf("out of rotation %v after its service stopped (interval × fall = %v)", took.Round(time.Millisecond), check.Interval*time.Duration(check.Fall))
	if took > check.Interval*time.Duration(check.Fall)+check.Interval {
		t.Errorf("took %v", took)
	}
	for i := 0; i < 300; i++ {
		who, err := get(t, c)
		if err != nil || who == "rs1" {
			t.Fatalf("request %d after the verdict: %q %v", i, who, err)
		}
	}
	if err := l.StartServer(1); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !l.Director.RealUp(6, vip, rip) {
		if time.Now().After(deadline) {
			t.Fatal("restarted server did not rejoin")
		}
		time.Sleep(10 * time.Millisecond)
	}
	seen := false
	for i := 0; i < 30 && !seen; i++ {
		who, _ := get(t, c)
		seen = who == "rs1"
	}
	if !seen {
		t.Fatal("rs1 back up but got no request")
	}
}

// TestDirectorPMTU: a full-size DF segment to the VIP gets "fragmentation
// needed" with MTU 1480 (1500 − IPIP), and the client's kernel adopts it.
// TestDirectorPMTU: a full-size segment to the VIP gets an ICMP
// fragmentation-needed from the director (written to the TUN, or sent by
// the ring's raw socket) and the client's path MTU drops to 1480.
func TestDirectorPMTU(t *testing.T) {
	for _, ingress := range []string{"tun", "ring"} {
		t.Run(ingress, func(t *testing.T) { testPMTU(t, ingress) })
	}
}

func testPMTU(t *testing.T, ingress string) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 1, Scheduler: "rr", Body: 10, Ingress: ingress})
	var conn net.Conn
	if err := l.Net.NS("client").Do(func() (err error) { conn, err = net.Dial("tcp4", lab.DirectorVIP+":80"); return }); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request large enough for full-size segments: the director answers
	// the first with ICMP; the client then resends at 1480.
	req := "POST / HTTP/1.1\r\nHost: vip\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("y", 20000)
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no response after PMTU discovery: %v", err)
	}
	resp.Body.Close()
	if got := l.Director.Drops()[director.DropFragNeeded]; got == 0 || l.Director.Replies.Load() == 0 {
		t.Fatalf("no fragmentation-needed sent (%d decided, %d written)", got, l.Director.Replies.Load())
	}
	routes, err := l.Net.NS("client").NL.RouteGet(net.ParseIP(lab.DirectorVIP))
	if err != nil || len(routes) == 0 {
		t.Fatal(err)
	}
	if routes[0].MTU != 1480 {
		t.Fatalf("client's path MTU to the VIP is %d, want 1480", routes[0].MTU)
	}
}

// TestMalformedAndStrangePacketsAreCounted: IPIP from anyone but the
// director is counted and dropped at the real server, a malformed packet is
// counted at the director, and both keep working.
func TestMalformedAndStrangePacketsAreCounted(t *testing.T) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 1, Scheduler: "rr"})
	var raw net.PacketConn
	if err := l.Net.NS("client").Do(func() (err error) { raw, err = net.ListenPacket("ip4:4", "0.0.0.0"); return }); err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	junk := []byte{0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 1, 2, 3, 4, 10, 99, 0, 10}
	if _, err := raw.WriteTo(junk, &net.IPAddr{IP: net.ParseIP(lab.RealAddr(0))}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for l.Agents[0].Dropped[header.ErrWrongSource].Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stranger's IPIP not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := get(t, l.Client()); err != nil {
		t.Fatalf("agent broken after a stranger's packet: %v", err)
	}
	// A truncated TCP packet to the VIP reaches the director's TUN: counted
	// and dropped, and the director goes on serving.
	var tcpRaw net.PacketConn
	if err := l.Net.NS("client").Do(func() (err error) { tcpRaw, err = net.ListenPacket("ip4:tcp", "0.0.0.0"); return }); err != nil {
		t.Fatal(err)
	}
	defer tcpRaw.Close()
	if _, err := tcpRaw.WriteTo([]byte{0x9c, 0x40, 0, 80, 1, 2}, &net.IPAddr{IP: net.ParseIP(lab.DirectorVIP)}); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(3 * time.Second)
	for l.Director.Drops()[director.DropNotIP] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("malformed packet on the director's TUN not counted")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := get(t, l.Client()); err != nil {
		t.Fatalf("director broken after a malformed packet: %v", err)
	}
}

// TestRealServerCheck: --check names what is wrong on the host in plain words.
func TestRealServerCheck(t *testing.T) {
	requireRoot(t)
	n, err := lab.DirectorTopology(1).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ns := n.NS("rs0")
	ns.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("1"), 0o644) })
	cfg := &realserver.Config{TUN: "vip0", Local: netip.MustParseAddr("10.30.0.99"),
		Directors: []netip.Addr{netip.MustParseAddr(lab.DirectorAddr)}, VIPs: []netip.Addr{netip.MustParseAddr(lab.DirectorVIP)}}
	problems := strings.Join(realserver.Check(cfg, ns.Host()), "\n")
	for _, want := range []string{"10.30.0.99 is not on this host"} {
		if !strings.Contains(problems, want) {
			t.Errorf("check did not say %q:\n%s", want, problems)
		}
	}
	cfg.Local = netip.MustParseAddr(lab.RealAddr(0))
	ns.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte("0"), 0o644) })
	ns.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/conf/default/rp_filter", []byte("0"), 0o644) })
	if p := realserver.Check(cfg, ns.Host()); len(p) != 0 {
		t.Fatalf("a ready host reported: %v", p)
	}
}

// TestDirectorGRE: the same service over GRE (key 9) instead of IPIP.
func TestDirectorGRE(t *testing.T) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 2, Scheduler: "rr", GRE: true})
	c := l.Client()
	count := map[string]int{}
	for i := 0; i < 100; i++ {
		who, err := get(t, c)
		if err != nil {
			t.Fatalf("request %d over GRE: %v", i, err)
		}
		count[who]++
	}
	if count["rs0"] != 50 || count["rs1"] != 50 {
		t.Fatalf("served %v", count)
	}
}
