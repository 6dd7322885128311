package lab

import (
	"bufio"
	"context"
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

	"golang.org/x/net/ipv4"
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
	Progress    func(phase string)
}

// DirectorReport is what `tunbond lab director` measured.
type DirectorReport struct {
	Spread       map[string]int `json:"spread"`
	DirectorRxMB float64        `json:"director_rx_mb"`
	ClientRxMB   float64        `json:"client_rx_mb"`
	Rows         []HTTPRow      `json:"http"`
	SmallPPS     float64        `json:"small_packets_per_second"`
	SmallCPUPct  float64        `json:"small_packets_director_cpu_pct"`
	SmallPerCore float64        `json:"small_packets_per_core_second"`
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
	cfgFile := filepath.Join(dir, "director.yaml")
	if err := os.WriteFile(cfgFile, []byte(svc.String()), 0o600); err != nil {
		return nil, err
	}
	progress := func(s string) {
		if cfg.Progress != nil {
			cfg.Progress(s)
		}
	}
	progress("starting tunbond director (pinned to CPU 1)")
	args := []string{cfg.Bin, "director", "--config", cfgFile}
	if _, err := exec.LookPath("taskset"); err == nil {
		args = append([]string{"taskset", "-c", "1"}, args...)
	}
	d := exec.CommandContext(ctx, args[0], args[1:]...)
	if err := StartAndAwait(n.NS("director"), d, "director started"); err != nil {
		return nil, err
	}
	defer func() { d.Process.Signal(os.Interrupt); d.Wait() }()
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

	progress(fmt.Sprintf("small packets through tunbond director, %v", cfg.Duration))
	rep.SmallPPS, rep.SmallCPUPct = smallPackets(ctx, n, sock, d.Process.Pid, cfg.Duration)
	if rep.SmallCPUPct > 0 {
		rep.SmallPerCore = rep.SmallPPS / (rep.SmallCPUPct / 100)
	}
	d.Process.Signal(os.Interrupt)
	d.Wait()

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

// smallPackets floods the UDP service with 64-byte datagrams from the
// client (one sendmmsg sender pinned to the other CPU) and counts what the
// director forwarded (its -L --stats).
func smallPackets(ctx context.Context, n *netns.Net, sock string, pid int, d time.Duration) (pps, cpuPct float64) {
	var c net.Conn
	if err := n.NS("client").Do(func() (err error) { c, err = net.Dial("udp4", DirectorVIP+":9"); return }); err != nil {
		return 0, 0
	}
	defer c.Close()
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
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one sender, pinned to CPU 0 (the director has CPU 1), 64 datagrams per sendmmsg
		defer wg.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(0)
		_ = unix.SchedSetaffinity(0, &set)
		pc := ipv4.NewPacketConn(c.(*net.UDPConn))
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 64-28)}
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			pc.WriteBatch(msgs, 0)
		}
	}()
	time.Sleep(500 * time.Millisecond) // warm-up
	p0, cpu0, t0 := inPkts(), procCPU(pid), time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
	}
	p1, cpu1, wall := inPkts(), procCPU(pid), time.Since(t0).Seconds()
	close(stop)
	wg.Wait()
	return (p1 - p0) / wall, 100 * (cpu1 - cpu0).Seconds() / wall
}
