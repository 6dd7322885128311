package director

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/host/hosttest"
	"github.com/tunbond/tunbond/endpoints/role/roletest"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// sent is one packet as a raw socket would put it on the wire.
type sent struct {
	pkt []byte // with the outer IPv4 header
	dst netip.Addr
}

// fakeTransport is a Transport whose SendTo hands each packet, with the
// outer header a raw socket adds, to a channel.
type fakeTransport struct {
	local netip.Addr
	out   chan sent
}

func (f *fakeTransport) open(c conn.RawConfig) (Transport, error) {
	f.local = c.Local
	return f, nil
}

func (f *fakeTransport) SendTo(pkts [][]byte, dsts []netip.Addr) (int, error) {
	for i, p := range pkts {
		b := make([]byte, header.IPv4HeaderLen+len(p))
		header.EncodeIPv4(b, len(b), 64, header.InnerIPProto(p), f.local.As4(), dsts[i].As4())
		copy(b[header.IPv4HeaderLen:], p)
		f.out <- sent{b, dsts[i]}
	}
	return len(pkts), nil
}

func (f *fakeTransport) Close() error { return nil }

func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("no %s", what)
	}
	var zero T
	return zero
}

type rig struct {
	rec   *hosttest.Recorder
	tun   *hosttest.TUN
	tr    *fakeTransport
	logs  *roletest.Log
	reg   *prometheus.Registry
	cfg   RunConfig
	deps  Deps
	probe chan netip.AddrPort
}

const (
	vip    = "192.0.2.10"
	local  = "10.20.0.2"
	realA  = "10.0.0.1"
	realB  = "10.0.0.2"
	tunDev = "vs0"
)

func newRig(t *testing.T) *rig {
	rec := hosttest.New("eth0")
	r := &rig{rec: rec, tun: hosttest.NewTUN(rec), tr: &fakeTransport{out: make(chan sent, 64)},
		logs: &roletest.Log{}, reg: prometheus.NewPedanticRegistry()}
	r.cfg = RunConfig{TUN: tunDev, Local: netip.MustParseAddr(local), Encap: encap.IPIP{}, Timeouts: DefaultTimeouts,
		Connections: 1000, Check: Check{Type: "none"},
		Rules: fmt.Sprintf("-A -t %s:80 -s rr\n-a -t %s:80 -r %s:80 -i -w 1\n", vip, vip, realA)}
	r.deps = Deps{Host: rec, OpenTUN: r.tun.Open, OpenUplink: r.tr.open, Metrics: r.reg,
		Log: slog.New(slog.NewTextHandler(r.logs, nil)), Now: func() time.Time { return t0 }}
	return r
}

func (r *rig) start(t *testing.T) *Running {
	t.Helper()
	d, err := Start(r.cfg, r.deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func syn(port uint16) []byte { return tcp("198.51.100.1", port, vip, 80, FlagSYN, 60, true) }

// TestDirectorDataLoop: a client packet read from the TUN leaves as an IPIP
// packet from the director to the real server the scheduler chose; the
// host gets exactly the VIP's route (and the TUN up), and after Close it
// is as it was; the admin socket answers while it runs and is gone after.
func TestDirectorDataLoop(t *testing.T) {
	r := newRig(t)
	r.cfg.AdminSocket = filepath.Join(t.TempDir(), "adm.sock")
	before := r.rec.State()
	d := r.start(t)

	want := []string{"link up vs0", "route replace 192.0.2.10/32 dev vs0 proto 201 scope link"}
	if got := r.rec.Calls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("host changes at start:\n%q\nwant\n%q", got, want)
	}
	in := syn(1000)
	r.tun.Ch.Outbound <- in
	s := await(t, r.tr.out, "packet to the real server")
	ip := header.IPv4(s.pkt)
	if s.dst != netip.MustParseAddr(realA) || ip.Protocol() != header.ProtoIPIP ||
		ip.Src() != netip.MustParseAddr(local) || ip.Dst() != netip.MustParseAddr(realA) {
		t.Fatalf("sent to %v: proto %d %v → %v", s.dst, ip.Protocol(), ip.Src(), ip.Dst())
	}
	if !bytes.Equal(ip.Payload(), in) {
		t.Fatalf("inner packet changed:\n%x\nwant\n%x", ip.Payload(), in)
	}
	if got := families(t, r.reg); !got["tunbond_director_tx_packets_total"] || !got["tunbond_director_real_connections_total"] {
		t.Fatalf("metrics registered: %v", got)
	}
	out, err := AdminCall(r.cfg.AdminSocket, []string{"-L", "-n"}, "")
	if err != nil || !strings.Contains(out, "TCP  "+vip+":80 rr") {
		t.Fatalf("adm -L -n: %v\n%s", err, out)
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if after := r.rec.State(); !reflect.DeepEqual(after, before) {
		t.Fatalf("host after Close:\n%q\nwant as before\n%q", after, before)
	}
	if _, err := AdminCall(r.cfg.AdminSocket, []string{"-L", "-n"}, ""); err == nil {
		t.Fatal("admin socket still answers after Close")
	}
	if got := families(t, r.reg); len(got) != 0 {
		t.Fatalf("metrics left registered after Close: %v", got)
	}
	if d.Err() != nil {
		t.Fatalf("Err after Close: %v", d.Err())
	}
}

// TestDirectorVIPRoutesFollowServices: a service added by adm gets its
// VIP's route, a deleted one loses it.
func TestDirectorVIPRoutesFollowServices(t *testing.T) {
	r := newRig(t)
	d := r.start(t)
	if _, err := d.Admin(strings.Fields("-A -u 192.0.2.20:53 -s rr"), "", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Admin(strings.Fields("-D -t 192.0.2.10:80"), "", t0); err != nil {
		t.Fatal(err)
	}
	routes, _ := r.rec.Routes(0)
	if len(routes) != 1 || routes[0].Dst != netip.MustParsePrefix("192.0.2.20/32") || routes[0].Link != tunDev {
		t.Fatalf("routes %v", routes)
	}
}

// TestDirectorKeepsPacketsReadWithTooManySegments: a TUN read that returns
// packets with tun.ErrTooManySegments forwards those packets, counts the
// error and goes on (defect 2 of issue 7: they were dropped).
func TestDirectorKeepsPacketsReadWithTooManySegments(t *testing.T) {
	r := newRig(t)
	r.tun.SetBatchSize(4)
	r.tun.Pending([][]byte{syn(1001), syn(1002), syn(1003)}, tun.ErrTooManySegments)
	d := r.start(t)
	for i := 0; i < 3; i++ {
		s := await(t, r.tr.out, fmt.Sprintf("segment %d at the real server", i))
		if got := header.IPv4(s.pkt).Payload(); !bytes.Equal(got, r.tunPending(i)) {
			t.Fatalf("segment %d: %x", i, got)
		}
	}
	r.tun.Ch.Outbound <- syn(1004)
	await(t, r.tr.out, "the next packet after the error")
	if got := d.SegmentErrors.Load(); got != 1 {
		t.Fatalf("segment errors %d, want 1", got)
	}
	select {
	case <-d.Done():
		t.Fatalf("stopped on ErrTooManySegments: %v", d.Err())
	default:
	}
}

// families lists the metric families a registry gathers.
func families(t *testing.T, g prometheus.Gatherer) map[string]bool {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		out[mf.GetName()] = true
	}
	return out
}

func (r *rig) tunPending(i int) []byte { return syn(uint16(1001 + i)) }

// TestDirectorStopsWhenItsTUNIsDeleted: Run returns an error naming the
// TUN, with a log line, when the TUN goes away under it (defect 4), and
// the host is restored.
func TestDirectorStopsWhenItsTUNIsDeleted(t *testing.T) {
	r := newRig(t)
	before := r.rec.State()
	started := r.logs.Seen("director started")
	errc := make(chan error, 1)
	go func() { errc <- Run(context.Background(), r.cfg, r.deps) }()
	await(t, started, "start")
	r.tun.Close() // as `ip link del` under the running director
	err := await(t, errc, "Run to return after its TUN was deleted")
	if err == nil || !strings.Contains(err.Error(), "tun vs0") {
		t.Fatalf("Run returned %v, want the TUN's error", err)
	}
	if !strings.Contains(r.logs.String(), "director stopped") {
		t.Fatalf("no log line:\n%s", r.logs)
	}
	if after := r.rec.State(); !reflect.DeepEqual(after, before) {
		t.Fatalf("host after the stop:\n%q\nwant\n%q", after, before)
	}
}

// TestDirectorRunStopsOnContext: Run returns nil when its context ends.
func TestDirectorRunStopsOnContext(t *testing.T) {
	r := newRig(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Run(ctx, r.cfg, r.deps); err != nil {
		t.Fatal(err)
	}
	if routes, _ := r.rec.Routes(0); len(routes) != 0 {
		t.Fatalf("routes left: %v", routes)
	}
}

// TestDirectorChecksFollowRules: a real server added with adm -a is
// checked (a dead one goes down), and a deleted one's check stops
// (defect 3: only the servers present at start were checked).
func TestDirectorChecksFollowRules(t *testing.T) {
	r := newRig(t)
	r.cfg.Check = Check{Type: "tcp", Interval: time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1}
	probed := make(chan netip.AddrPort)
	dead := netip.MustParseAddrPort(realB + ":80")
	r.deps.Probe = func(ctx context.Context, rip netip.AddrPort) error {
		select {
		case probed <- rip:
		case <-ctx.Done():
			return ctx.Err()
		}
		if rip == dead {
			return fmt.Errorf("connection refused")
		}
		return nil
	}
	d := r.start(t)
	svc := netip.MustParseAddrPort(vip + ":80")
	awaitProbe := func(want netip.AddrPort) {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case got := <-probed:
				if got == want {
					return
				}
			case <-timeout:
				t.Fatalf("%v never probed", want)
			}
		}
	}
	awaitProbe(netip.MustParseAddrPort(realA + ":80"))
	if _, err := d.Admin(strings.Fields("-a -t "+vip+":80 -r "+realB+":80 -w 1"), "", t0); err != nil {
		t.Fatal(err)
	}
	awaitProbe(dead)
	awaitProbe(dead) // the first one's verdict (fall 1) is in
	if d.RealUp(6, svc, dead) {
		t.Fatal("a dead real server added by adm -a is still up")
	}
	if got := d.Checked(); len(got) != 2 {
		t.Fatalf("checked %v", got)
	}
	if _, err := d.Admin(strings.Fields("-d -t "+vip+":80 -r "+realB+":80"), "", t0); err != nil {
		t.Fatal(err)
	}
	if got, want := d.Checked(), []string{"TCP " + vip + ":80 -> " + realA + ":80"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("checked after -d: %v, want %v", got, want)
	}
	for i := 0; i < 5; i++ {
		if got := await(t, probed, "a probe"); got == dead {
			t.Fatal("the deleted real server is still probed")
		}
	}
}

// fakeRing is a Ring fed by a channel; what the director writes back
// (ICMP errors) goes to another, and the destinations are recorded.
type fakeRing struct {
	in, written chan []byte
	dsts        chan []netip.Addr
	closed      chan struct{}
	truncated   atomic.Uint64 // Stats; on the interface TruncatedOn
	truncOn     int
}

func newFakeRing() *fakeRing {
	return &fakeRing{in: make(chan []byte, 64), written: make(chan []byte, 64), dsts: make(chan []netip.Addr, 64), closed: make(chan struct{})}
}

func (f *fakeRing) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-f.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

func (f *fakeRing) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		f.written <- slices.Clone(b[offset:])
	}
	return len(bufs), nil
}

func (f *fakeRing) BatchSize() int                          { return 1 }
func (f *fakeRing) SetDestinations(dsts []netip.Addr) error { f.dsts <- slices.Clone(dsts); return nil }
func (f *fakeRing) Stats() (uint64, uint64)                 { return f.truncated.Load(), 7 }
func (f *fakeRing) TruncatedOn() int                        { return f.truncOn }
func (f *fakeRing) Close() error                            { close(f.closed); return nil }

// TestDirectorRingIngress: with ingress ring there is no TUN; the ring
// takes the VIPs, which are routed to a blackhole (the kernel must not
// forward its own copy); a packet from the ring goes to a real server; an
// ICMP error (a too-big packet with DF) goes back through the ring; Close
// removes the routes and closes the ring.
func TestDirectorRingIngress(t *testing.T) {
	r := newRig(t)
	ring := newFakeRing()
	r.cfg.Ingress, r.cfg.MTU = "ring", 1500
	r.deps.OpenRing = func() (Ring, error) { return ring, nil }
	before := r.rec.State()
	d := r.start(t)
	if got := await(t, ring.dsts, "ring destinations"); !slices.Equal(got, []netip.Addr{netip.MustParseAddr(vip)}) {
		t.Fatalf("ring takes %v, want the VIP", got)
	}
	want := []string{"route replace blackhole 192.0.2.10/32 proto 201"}
	if got := r.rec.Calls(); !reflect.DeepEqual(got, want) {
		t.Fatalf("host changes at start:\n%q\nwant\n%q", got, want)
	}
	in := syn(1000)
	ring.in <- in
	s := await(t, r.tr.out, "packet to the real server")
	if !bytes.Equal(header.IPv4(s.pkt).Payload(), in) || s.dst != netip.MustParseAddr(realA) {
		t.Fatalf("sent %x to %v", s.pkt, s.dst)
	}
	// A new service's VIP joins the filter (and gets its blackhole).
	if _, err := d.Admin(strings.Fields("-A -u 192.0.2.20:53 -s rr"), "", t0); err != nil {
		t.Fatal(err)
	}
	if got := await(t, ring.dsts, "ring destinations after adm -A"); len(got) != 2 || !slices.Contains(got, netip.MustParseAddr("192.0.2.20")) {
		t.Fatalf("ring takes %v after a service was added", got)
	}
	if got := families(t, r.reg); !got["tunbond_director_ring_truncated_total"] || !got["tunbond_director_ring_dropped_total"] {
		t.Fatalf("ring metrics missing: %v", got)
	}
	ring.in <- tcp("198.51.100.1", 1000, vip, 80, FlagACK, 1500, true) // 1520 with IPIP
	icmp := header.IPv4(await(t, ring.written, "ICMP error through the ring"))
	if icmp.Protocol() != 1 || icmp.Src() != netip.MustParseAddr(vip) || icmp.Dst() != netip.MustParseAddr("198.51.100.1") || icmp[20] != 3 || icmp[21] != 4 {
		t.Fatalf("written back: %x", icmp)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ring.closed:
	default:
		t.Fatal("ring not closed")
	}
	if after := r.rec.State(); !reflect.DeepEqual(after, before) {
		t.Fatalf("host after Close:\n%q\nwant as before\n%q", after, before)
	}
}

// TestDirectorRingRemovesLeftoverBlackholes: blackhole VIP routes that a
// killed director left behind (tunbond's protocol, a host route) are
// removed at start; others' blackholes and tunbond's other routes stay.
func TestDirectorRingRemovesLeftoverBlackholes(t *testing.T) {
	r := newRig(t)
	r.cfg.Ingress = "ring"
	r.deps.OpenRing = func() (Ring, error) { return newFakeRing(), nil }
	leftover := host.Route{Dst: netip.MustParsePrefix("192.0.2.99/32"), Blackhole: true}
	theirs := host.Route{Dst: netip.MustParsePrefix("192.0.2.98/32"), Blackhole: true, Protocol: 4}
	other := host.Route{Dst: netip.MustParsePrefix("198.51.100.0/24"), Link: "eth0"}
	for _, rt := range []host.Route{leftover, theirs, other} {
		if err := r.rec.ReplaceRoute(rt); err != nil {
			t.Fatal(err)
		}
	}
	r.start(t)
	routes, _ := r.rec.Routes(0)
	var got []string
	for _, rt := range routes {
		got = append(got, rt.String())
	}
	slices.Sort(got)
	want := []string{"198.51.100.0/24 dev eth0 proto 201", "blackhole 192.0.2.10/32 proto 201", "blackhole 192.0.2.98/32 proto 4"}
	if !slices.Equal(got, want) {
		t.Fatalf("routes after start:\n%q\nwant\n%q", got, want)
	}
	if !strings.Contains(r.logs.String(), "removed a blackhole route an earlier director left") {
		t.Fatalf("not logged:\n%s", r.logs.String())
	}
}

// TestDirectorWarnsOfTruncatedPackets: packets too large for the ring are
// warned of, naming the interface and what to do, at most once a minute.
func TestDirectorWarnsOfTruncatedPackets(t *testing.T) {
	r := newRig(t)
	ring := newFakeRing()
	ring.truncOn = 1 // lo, in this namespace
	// The expiry loop calls it each second; here it is called alone.
	d := &Running{ring: ring, host: r.rec, log: r.deps.Log}
	warnings := func() int { return strings.Count(r.logs.String(), "packets larger than a ring frame") }
	d.warnTruncated(t0)
	if warnings() != 0 {
		t.Fatal("warned with nothing truncated")
	}
	ring.truncated.Store(3)
	d.warnTruncated(t0)
	if warnings() != 1 || !strings.Contains(r.logs.String(), "ethtool -K lo gro off lro off") {
		t.Fatalf("no warning naming lo:\n%s", r.logs.String())
	}
	ring.truncated.Store(5)
	d.warnTruncated(t0.Add(30 * time.Second))
	if warnings() != 1 {
		t.Fatal("warned again within a minute")
	}
	d.warnTruncated(t0.Add(61 * time.Second))
	if warnings() != 2 {
		t.Fatal("no warning a minute later, with more truncated")
	}
}
