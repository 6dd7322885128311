package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/endpoints/realserver"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/tunnel/encap"
)

// DirectorBenchConfig is `tunbond lab director`.
type DirectorBenchConfig struct {
	Bin         string // the tunbond binary, run as the director
	Reals       int
	Scheduler   string
	Requests    int // for the spread
	Concurrency int
	BodyBytes   int
	Duration    time.Duration
	// Ingress lists the director's ingress modes (its config's
	// `ingress:`) to measure small packets with, the director restarted
	// for each; empty: just "tun".
	Ingress  []string
	Progress func(phase string)
}

// DirectorReport is what `tunbond lab director` measured.
type DirectorReport struct {
	Spread       map[string]int `json:"spread"`
	DirectorRxMB float64        `json:"director_rx_mb"`
	ClientRxMB   float64        `json:"client_rx_mb"`
	Rows         []HTTPRow      `json:"http"`
	Small        []SmallRow     `json:"small"` // per ingress mode: existing flows, then new flows
}

// SmallRow is one small-packet run: 64-byte IPv4 UDP packets written as
// whole frames onto the wire into the director's eth0 (an AF_PACKET
// sender on the router's veth, pinned to CPU 0), the director pinned to
// CPU 1, what it sends out dropped by the wire (a tc filter on the
// router's veth), so the director's CPU is its own work.
type SmallRow struct {
	Ingress string `json:"ingress"` // the director's ingress mode
	Flows   string `json:"flows"`   // "existing": 64 flows over and over; "new": every packet a new 5-tuple
	// PPS is the director's output: packets per second the router's veth
	// facing it received (what the director actually sent).
	PPS        float64 `json:"packets_per_second"`
	CPUPct     float64 `json:"director_cpu_pct"`
	PerCore    float64 `json:"per_core_second"` // PPS / (CPUPct/100)
	OfferedPPS float64 `json:"offered_pps"`     // what the sender put on the wire
	// ServicePPS is the UDP service's InPkts (adm -L --stats) per second:
	// what the director took in.
	ServicePPS float64 `json:"service_in_pps"`
	// CoreBusyPct is how busy the director's core (CPU 1) was, whoever ran
	// on it: well above CPUPct, something else took the director's core.
	CoreBusyPct float64 `json:"director_core_busy_pct"`
	// SenderBound: the director sent about all it was offered and had CPU
	// to spare, so the sender, not the director, may be the limit.
	SenderBound bool   `json:"sender_bound"`
	Error       string `json:"error,omitempty"`
}

// HTTPRow is one load balancer's HTTP result.
type HTTPRow struct {
	Method   string  `json:"method"`
	ReqPerS  float64 `json:"requests_per_second"`
	Gbps     float64 `json:"response_gbps"`
	CPUPct   float64 `json:"balancer_cpu_pct"`
	Failures int64   `json:"failures"`
	Error    string  `json:"error,omitempty"`
}

// RunDirectorBench builds client, router, director and real servers, runs
// `tunbond director` (pinned to one CPU) and measures it, then HAProxy in
// TCP mode on the same topology.
func RunDirectorBench(ctx context.Context, id string, cfg DirectorBenchConfig) (*DirectorReport, error) {
	n, err := DirectorTopology(cfg.Reals).Build(id)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	if err := PrepareDirectorNet(n); err != nil {
		return nil, err
	}
	body := strings.Repeat("x", cfg.BodyBytes)
	var agents []*realserver.Agent
	defer func() {
		for _, a := range agents {
			a.Close()
		}
	}()
	var reals []string
	for i := 0; i < cfg.Reals; i++ {
		name := fmt.Sprintf("rs%d", i)
		srv, err := ServeHTTP(n.NS(name), name, body)
		if err != nil {
			return nil, err
		}
		defer srv.Close()
		a, err := realserver.Start(realserver.Config{TUN: "vip0", Local: netip.MustParseAddr(RealAddr(i)),
			Directors: []netip.Addr{netip.MustParseAddr(directorAddr)}, VIPs: []netip.Addr{netip.MustParseAddr(DirectorVIP)},
			Encap: encap.IPIP{}}, realserver.Deps{Host: n.NS(name).Host(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
		reals = append(reals, RealAddr(i))
	}
	dir, err := os.MkdirTemp("", "tunbond-lab-director")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "director.sock")
	var svc strings.Builder
	fmt.Fprintf(&svc, "local: %s\ncheck: {type: none}\ncontrol: {socket: %s}\nservices:\n", directorAddr, sock)
	for _, proto := range []string{"tcp", "udp"} {
		port := map[string]int{"tcp": 80, "udp": 9}[proto]
		fmt.Fprintf(&svc, "  - proto: %s\n    vip: %s:%d\n    scheduler: %s\n    reals:\n", proto, DirectorVIP, port, cfg.Scheduler)
		for _, r := range reals {
			fmt.Fprintf(&svc, "      - {address: %s:%d}\n", r, port)
		}
	}
	progress := func(s string) {
		if cfg.Progress != nil {
			cfg.Progress(s)
		}
	}
	// startDirector starts `tunbond director` with the services and the
	// ingress mode ("tun", the default, adds no line), pinned to CPU 1.
	var d *exec.Cmd
	stopDirector := func() {
		if d != nil && d.Process != nil {
			d.Process.Signal(os.Interrupt)
			d.Wait()
		}
		d = nil
	}
	defer stopDirector()
	startDirector := func(ingress string) error {
		conf := svc.String()
		if ingress != "" && ingress != "tun" {
			conf = "ingress: " + ingress + "\n" + conf
		}
		cfgFile := filepath.Join(dir, "director.yaml")
		if err := os.WriteFile(cfgFile, []byte(conf), 0o600); err != nil {
			return err
		}
		args := []string{cfg.Bin, "director", "--config", cfgFile}
		if _, err := exec.LookPath("taskset"); err == nil {
			args = append([]string{"taskset", "-c", "1"}, args...)
		}
		c := exec.CommandContext(ctx, args[0], args[1:]...)
		if err := StartAndAwait(n.NS("director"), c, "director started"); err != nil {
			return err
		}
		d = c
		return nil
	}
	progress("starting tunbond director (pinned to CPU 1)")
	if err := startDirector("tun"); err != nil {
		return nil, err
	}
	rep := &DirectorReport{Spread: map[string]int{}}

	progress(fmt.Sprintf("spread: %d requests, a connection each", cfg.Requests))
	client := HTTPClient(n.NS("client"))
	eth, _ := n.NS("director").NL.LinkByName("eth0")
	rx0 := eth.Attrs().Statistics.RxBytes
	var got int64
	for i := 0; i < cfg.Requests; i++ {
		resp, err := client.Get("http://" + DirectorVIP + "/")
		if err != nil {
			return nil, fmt.Errorf("spread request %d: %w", i, err)
		}
		m, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got += m
		rep.Spread[resp.Header.Get("X-Real-Server")]++
	}
	eth, _ = n.NS("director").NL.LinkByName("eth0")
	rep.DirectorRxMB = float64(eth.Attrs().Statistics.RxBytes-rx0) / 1e6
	rep.ClientRxMB = float64(got) / 1e6

	progress(fmt.Sprintf("HTTP through tunbond director, %d clients, %v", cfg.Concurrency, cfg.Duration))
	rep.Rows = append(rep.Rows, httpLoad(ctx, n.NS("client"), "http://"+DirectorVIP+"/", cfg, d.Process.Pid, "tunbond-director"))

	stopDirector()

	// Small packets, per ingress mode, with the wire taking what the
	// director sends (sinkTunnels says why).
	stopSink, err := sinkTunnels(n.NS("router"), "director")
	if err != nil {
		return nil, err
	}
	modes := cfg.Ingress
	if len(modes) == 0 {
		modes = []string{"tun"}
	}
	for _, mode := range modes {
		progress(fmt.Sprintf("small packets through tunbond director (ingress %s): existing flows, then new flows, %v each", mode, cfg.Duration))
		if err := startDirector(mode); err != nil {
			for _, flows := range []string{"existing", "new"} {
				rep.Small = append(rep.Small, SmallRow{Ingress: mode, Flows: flows, Error: err.Error()})
			}
			continue
		}
		rep.Small = append(rep.Small, smallPackets(ctx, n, sock, d.Process.Pid, cfg.Duration, cfg.Reals, mode)...)
		stopDirector()
	}
	if err := stopSink(); err != nil {
		return nil, fmt.Errorf("removing the tunnel sink: %w", err)
	}

	if _, err := exec.LookPath("haproxy"); err != nil {
		rep.Rows = append(rep.Rows, HTTPRow{Method: "haproxy-tcp", Error: "haproxy is not installed (apt-get install haproxy)"})
		return rep, nil
	}
	progress(fmt.Sprintf("HTTP through HAProxy (TCP mode), %d clients, %v", cfg.Concurrency, cfg.Duration))
	var hc strings.Builder
	fmt.Fprintf(&hc, "global\n  maxconn 4096\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\nfrontend f\n  bind %s:8080\n  default_backend b\nbackend b\n  balance roundrobin\n", directorAddr)
	for i, r := range reals {
		fmt.Fprintf(&hc, "  server rs%d %s:80\n", i, r)
	}
	hcfg := filepath.Join(dir, "haproxy.cfg")
	os.WriteFile(hcfg, []byte(hc.String()), 0o600)
	hargs := []string{"haproxy", "-f", hcfg, "-db"}
	if _, err := exec.LookPath("taskset"); err == nil {
		hargs = append([]string{"taskset", "-c", "1"}, hargs...)
	}
	h := exec.CommandContext(ctx, hargs[0], hargs[1:]...)
	var herr strings.Builder
	h.Stderr = &herr
	if err := n.NS("director").Start(h); err != nil {
		return rep, err
	}
	defer func() { h.Process.Kill(); h.Wait() }()
	if err := awaitListen(ctx, n.NS("client"), directorAddr+":8080"); err != nil {
		return rep, fmt.Errorf("haproxy: %w: %s", err, herr.String())
	}
	rep.Rows = append(rep.Rows, httpLoad(ctx, n.NS("client"), "http://"+directorAddr+":8080/", cfg, h.Process.Pid, "haproxy-tcp"))
	return rep, nil
}

// StartAndAwait starts cmd in ns and returns once a line of its stderr
// contains want (or fails with what it said, if it exits first).
func StartAndAwait(ns *netns.Namespace, cmd *exec.Cmd, want string) error {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := ns.Start(cmd); err != nil {
		return err
	}
	sc := bufio.NewScanner(stderr)
	var seen []string
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), want) {
			go func() {
				for sc.Scan() {
				}
			}()
			return nil
		}
	}
	cmd.Wait()
	return fmt.Errorf("%s did not start: %s", cmd.Args[0], strings.Join(seen, "\n"))
}

// awaitListen dials addr from ns until something accepts.
func awaitListen(ctx context.Context, ns *netns.Namespace, addr string) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var c net.Conn
		err := ns.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, 200*time.Millisecond); return })
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

// procCPU is a process's user+system CPU time, from /proc.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / 100 // USER_HZ
}

// alive says whether process pid runs (exited, not yet waited for, is not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// cpuBusy is one CPU's busy and total time in ticks, from /proc/stat.
func cpuBusy(cpu int) (busy, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[0] != fmt.Sprintf("cpu%d", cpu) {
			continue
		}
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
	}
	return busy, total
}

// httpLoad runs cfg.Concurrency clients, a new connection per request, for
// cfg.Duration, and reads the balancer process's CPU (taskset execs it: same pid).
func httpLoad(ctx context.Context, ns *netns.Namespace, url string, cfg DirectorBenchConfig, pid int, name string) HTTPRow {
	client := HTTPClient(ns)
	var reqs, bytes, fails atomic.Int64
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	cpu0, t0 := procCPU(pid), time.Now()
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						fails.Add(1)
					}
					continue
				}
				m, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil {
					reqs.Add(1)
					bytes.Add(m)
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(t0).Seconds()
	cpu := (procCPU(pid) - cpu0).Seconds()
	return HTTPRow{Method: name, ReqPerS: float64(reqs.Load()) / wall, Gbps: float64(bytes.Load()) * 8 / wall / 1e9,
		CPUPct: 100 * cpu / wall, Failures: fails.Load()}
}

// smallPackets measures the director (pid, its admin socket sock) with
// 64-byte UDP packets to the UDP service: first 64 flows (the client's
// address, source ports 40000..40063) over and over, then every packet a
// new flow. Whole frames go onto the router's veth facing the director, so
// the sender's core does no UDP stack and no routing for them, only the
// write (and, as the veth delivers in the sender's softirq, the director's
// kernel receiving them up to its TUN). The caller sinks what the director
// sends (sinkTunnels).
func smallPackets(ctx context.Context, n *netns.Net, sock string, pid int, d time.Duration, reals int, mode string) []SmallRow {
	var rows []SmallRow
	for _, flows := range []string{"existing", "new"} {
		r, err := smallRun(ctx, n, sock, pid, d, reals, flows == "new")
		r.Ingress, r.Flows = mode, flows
		if err != nil {
			r.Error = err.Error()
		}
		rows = append(rows, r)
	}
	return rows
}

func smallRun(ctx context.Context, n *netns.Net, sock string, pid int, d time.Duration, reals int, fresh bool) (SmallRow, error) {
	router, dns := n.NS("router"), n.NS("director")
	eth, err := dns.NL.LinkByName("eth0")
	if err != nil {
		return SmallRow{}, err
	}
	veth, err := router.NL.LinkByName("director")
	if err != nil {
		return SmallRow{}, err
	}
	frames := udpFrames(eth.Attrs().HardwareAddr, veth.Attrs().HardwareAddr, netip.MustParseAddr(directorClient),
		netip.MustParseAddr(DirectorVIP), 40000, 9, smallIPBytes, 64)
	s, err := newFrameSender(router, "director", frames)
	if err != nil {
		return SmallRow{}, err
	}
	defer s.Close()
	// The director forgets the router's MAC: what it sends from here on
	// has asked for it by ARP through the sink, which must pass ARP.
	if neighs, err := dns.NL.NeighList(eth.Attrs().Index, unix.AF_INET); err == nil {
		for _, nb := range neighs {
			if nb.IP.Equal(net.ParseIP("10.20.0.1")) {
				dns.NL.NeighDel(&nb)
			}
		}
	}
	inPkts := func() float64 {
		out, err := director.AdminCall(sock, []string{"-L", "-n", "--stats"}, "")
		if err != nil {
			return 0
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[0] == "UDP" {
				v, _ := strconv.ParseFloat(f[3], 64)
				return v
			}
		}
		return 0
	}
	rx := func(ns *netns.Namespace, name string) float64 {
		l, err := ns.NL.LinkByName(name)
		if err != nil || l.Attrs().Statistics == nil {
			return 0
		}
		return float64(l.Attrs().Statistics.RxPackets)
	}
	realsRx := func() (t float64) {
		for i := 0; i < reals; i++ {
			t += rx(n.NS(fmt.Sprintf("rs%d", i)), "eth0")
		}
		return t
	}

	// This process keeps off the director's core while it runs: its Go
	// runtime's sysmon thread (which wakes often while a goroutine, the
	// sender, runs without blocking) took ~7% of CPU 1 (perf), switching
	// the director out each time.
	if restore, err := pinProcess(0); err == nil {
		defer restore()
	}
	var stop atomic.Bool
	var sent atomic.Int64
	var sendErr error
	done := make(chan struct{})
	go func() { // pinned to CPU 0 (the director has CPU 1), 64 frames per sendmmsg
		defer close(done)
		// Unlocked at the end, not left to die with the goroutine: the
		// director may be this thread's child, and its Pdeathsig (see
		// netns.Namespace.Start) fires when the thread that started it
		// exits. The deferred restore of pinProcess unpins it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(0)
		_ = unix.SchedSetaffinity(0, &set)
		walk := &newFlows{base: [4]byte{10, 10, 0, 0}}
		for !stop.Load() {
			if fresh {
				walk.next(frames)
			}
			k, err := s.send()
			if err != nil && sendErr == nil {
				sendErr = fmt.Errorf("sending frames: %w", err)
			}
			sent.Add(int64(k))
		}
	}()
	time.Sleep(500 * time.Millisecond) // warm-up (and ARP)
	out0, svc0, rs0, sent0, cpu0, t0 := rx(router, "director"), inPkts(), realsRx(), sent.Load(), procCPU(pid), time.Now()
	busy0, total0 := cpuBusy(1)
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	out1, svc1, rs1, sent1, cpu1, wall := rx(router, "director"), inPkts(), realsRx(), sent.Load(), procCPU(pid), time.Since(t0).Seconds()
	busy1, total1 := cpuBusy(1)
	stop.Store(true)
	<-done

	r := SmallRow{PPS: (out1 - out0) / wall, CPUPct: 100 * (cpu1 - cpu0).Seconds() / wall,
		OfferedPPS: float64(sent1-sent0) / wall, ServicePPS: (svc1 - svc0) / wall}
	if r.CPUPct > 0 {
		r.PerCore = r.PPS / (r.CPUPct / 100)
	}
	if total1 > total0 {
		r.CoreBusyPct = 100 * float64(busy1-busy0) / float64(total1-total0)
	}
	r.SenderBound = r.PPS >= 0.98*r.OfferedPPS && r.CPUPct < 95
	switch {
	case sendErr != nil:
		return r, sendErr
	case !alive(pid):
		return r, errors.New("the director exited during the run")
	case svc1 == svc0:
		return r, errors.New("the director's UDP service counted no packet (reverse-path filter? ingress?)")
	case rs1-rs0 > (out1-out0)/100:
		return r, fmt.Errorf("the sink let %.0f packets through to the real servers", rs1-rs0)
	}
	return r, nil
}
