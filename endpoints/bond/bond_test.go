package bond

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/endpoints/host/hosttest"
	"github.com/tunbond/tunbond/endpoints/role/roletest"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/conn/conntest"
	"github.com/tunbond/tunbond/tunnel/encap"
)

// site is one bond endpoint over fakes: a Recorder host, fake TUN, one
// end of each conntest pair.
type site struct {
	rec     *hosttest.Recorder
	cfg     *Config
	uplinks map[netip.Addr]*conntest.ChannelUplink
	tun     *hosttest.TUN
	reg     *prometheus.Registry
	logs    *roletest.Log
}

func (s *site) deps() Deps {
	return Deps{
		Host:    s.rec,
		OpenTUN: s.tun.Open,
		OpenUplink: func(rc conn.RawConfig) (conn.Uplink, error) {
			u, ok := s.uplinks[rc.Local]
			if !ok {
				return nil, fmt.Errorf("no fake uplink from %v", rc.Local)
			}
			return u, nil
		},
		Metrics: s.reg,
		Log:     slog.New(slog.NewTextHandler(s.logs, nil)),
	}
}

func loadConfig(t *testing.T, body string) *Config {
	t.Helper()
	c, err := LoadConfig(writeConfig(t, body), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Site A: p0 on eth0 (on-link with its remote's gateway-less /24 of the
// test's choosing), p1 on eth1 whose remote is reached through the main
// table's default gateway.
const siteA = `
tun: {name: tb0, address: 10.77.0.1/30}
key: 7
routing: manage
keepalive: {interval: 20ms, misses: 3}
control: {socket: ""}
paths:
  - {name: p0, local: 192.0.2.1, remote: 192.0.2.2, device: eth0}
  - {name: p1, local: 203.0.113.9, remote: 198.51.100.2}
`

const siteB = `
tun: {name: tb0, address: 10.77.0.2/30}
key: 7
routing: none
keepalive: {interval: 20ms, misses: 3}
control: {socket: ""}
paths:
  - {name: p0, local: 192.0.2.2, remote: 192.0.2.1, device: eth0}
  - {name: p1, local: 198.51.100.2, remote: 203.0.113.9}
`

func newSite(t *testing.T, body string) *site {
	t.Helper()
	s := &site{rec: hosttest.New("eth0", "eth1"), cfg: loadConfig(t, body),
		uplinks: map[netip.Addr]*conntest.ChannelUplink{},
		reg:     prometheus.NewPedanticRegistry(), logs: &roletest.Log{}}
	s.tun = hosttest.NewTUN(s.rec)
	// The system's own addresses and main-table routes.
	for _, p := range s.cfg.Paths {
		link := "eth1"
		if p.Device == "eth0" {
			link = "eth0"
		}
		if err := s.rec.ReplaceAddr(link, netip.PrefixFrom(netip.MustParseAddr(p.Local), 24)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.rec.ReplaceRoute(host.Route{Gateway: netip.MustParseAddr("203.0.113.1"), Link: "eth1", Protocol: 3}); err != nil {
		t.Fatal(err)
	}
	return s
}

// connect makes the conntest pairs between the paths of a and b.
func connect(a, b *site) {
	for i, p := range a.cfg.Paths {
		la, lb := netip.MustParseAddr(p.Local), netip.MustParseAddr(b.cfg.Paths[i].Local)
		ua, ub := conntest.Pair(la, lb, encap.GRE{}.Protocols())
		a.uplinks[la], b.uplinks[lb] = ua, ub
	}
}

func start(t *testing.T, s *site) *Bond {
	t.Helper()
	b, err := Start(s.cfg, s.deps())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func waitUp(t *testing.T, bs ...*Bond) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, b := range bs {
		for _, p := range b.Engine().Status() {
			if err := b.Engine().WaitPath(ctx, p.Name, true); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func metricNames(t *testing.T, g prometheus.Gatherer) []string {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

// TestStartRecordsHostChangesAndCloseUndoesThem runs the whole role over
// fakes: what it changes on the host, in order (tunbond's protocol on every
// route and rule), its metrics registered, and after Close a host as it was.
func TestStartRecordsHostChangesAndCloseUndoesThem(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	before := a.rec.State()
	calls0 := len(a.rec.Calls())

	ba := start(t, a)
	start(t, b)
	if ba.MTU() != 1500-32 {
		t.Fatalf("MTU %d, want 1468 (1500 − GRE with key and sequence − IPv4)", ba.MTU())
	}
	want := []string{
		// each path's routing as it joins (at start: all that can), then the TUN
		"route replace 192.0.2.0/24 dev eth0 table 7700 proto 201 scope link src 192.0.2.1",
		"rule add 7700: from 192.0.2.1/32 lookup 7700 proto 201",
		"route replace 203.0.113.0/24 dev eth1 table 7701 proto 201 scope link src 203.0.113.9",
		"route replace default via 203.0.113.1 dev eth1 table 7701 proto 201 src 203.0.113.9",
		"rule add 7700: from 203.0.113.9/32 lookup 7701 proto 201",
		"link mtu tb0 1468",
		"addr replace 10.77.0.1/30 dev tb0",
		"link up tb0",
	}
	if got := a.rec.Calls()[calls0:]; !slices.Equal(got, want) {
		t.Fatalf("host changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	state := strings.Join(a.rec.State(), "\n")
	for _, s := range []string{"link tb0 mtu 1468 up true", "addr 10.77.0.1/30 dev tb0",
		"rule 7700: from 203.0.113.9/32 lookup 7701 proto 201", "route default via 203.0.113.1 dev eth1 table 7701 proto 201"} {
		if !strings.Contains(state, s) {
			t.Errorf("host lacks %q:\n%s", s, state)
		}
	}
	waitUp(t, ba)
	if names := metricNames(t, a.reg); !slices.Contains(names, "tunbond_path_up") || !slices.Contains(names, "tunbond_reorder_timeout_seconds") {
		t.Fatalf("metrics registered: %v", names)
	}

	calls1 := len(a.rec.Calls())
	if err := ba.Close(); err != nil {
		t.Fatal(err)
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("host not restored:\nbefore %q\nafter  %q", before, after)
	}
	if undo := a.rec.Calls()[calls1:]; len(undo) == 0 || undo[0] != "addr del 10.77.0.1/30 dev tb0" {
		t.Fatalf("undo not newest first: %q", undo)
	}
	if names := metricNames(t, a.reg); len(names) != 0 {
		t.Fatalf("metrics left registered after Close: %v", names)
	}
	select {
	case <-ba.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if ba.Err() != nil {
		t.Fatalf("Err after Close: %v", ba.Err())
	}
}

// TestStartRemovesLeftovers: a killed run's rule and table (another
// route_table and rule_priority than now) are removed at start and logged;
// what is not tunbond's stays.
func TestStartRemovesLeftovers(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	clean := a.rec.State()
	must(a.rec.AddRule(host.Rule{Priority: 900, Src: netip.MustParsePrefix("192.0.2.1/32"), Table: 77}))
	must(a.rec.ReplaceRoute(host.Route{Dst: netip.MustParsePrefix("192.0.2.0/24"), Link: "eth0", Table: 77, Scope: host.ScopeLink}))
	must(a.rec.AddRule(host.Rule{Priority: 900, Src: netip.MustParsePrefix("192.0.2.1/32"), Table: 78, Protocol: 4})) // not ours
	foreign := a.rec.State()
	foreign = slices.DeleteFunc(foreign, func(s string) bool { return strings.Contains(s, "77") })

	ba := start(t, a)
	state := strings.Join(a.rec.State(), "\n")
	if strings.Contains(state, "lookup 77 ") || strings.Contains(state, "table 77 ") {
		t.Fatalf("an earlier run's rule or route is left:\n%s", state)
	}
	if !strings.Contains(state, "lookup 78 proto 4") {
		t.Fatalf("a rule that is not tunbond's was removed:\n%s", state)
	}
	logs := a.logs.String()
	for _, s := range []string{"rule 900: from 192.0.2.1/32 lookup 77 proto 201", "route 192.0.2.0/24 dev eth0 table 77 proto 201"} {
		if !strings.Contains(logs, s) {
			t.Errorf("removal of %q not logged:\n%s", s, logs)
		}
	}
	must(ba.Close())
	if after := a.rec.State(); !slices.Equal(after, foreign) {
		t.Fatalf("after Close:\n%q\nwant (the host without the leftovers):\n%q\n(clean %q)", after, foreign, clean)
	}
}

// TestControlSocketPathThatIsAFile: a control.socket path holding a file is
// refused with an error that says so, the file is left alone, and the
// failed start leaves the host as it was.
func TestControlSocketPathThatIsAFile(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	file := filepath.Join(t.TempDir(), "endpoint.sock")
	if err := os.WriteFile(file, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.cfg.Control.Socket = file
	before := a.rec.State()
	_, err := Start(a.cfg, a.deps())
	if err == nil || !strings.Contains(err.Error(), "control.socket") || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Start: %v; want control.socket: ... not a socket", err)
	}
	if body, _ := os.ReadFile(file); string(body) != "keep me" {
		t.Fatalf("the file at control.socket was changed: %q", body)
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("a failed start left changes:\nbefore %q\nafter  %q", before, after)
	}
}

// TestControlSocket answers status and weight over the bond's socket.
func TestControlSocket(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	sock := filepath.Join(t.TempDir(), "run", "endpoint.sock")
	a.cfg.Control.Socket = sock
	ba := start(t, a)
	start(t, b)
	waitUp(t, ba)
	resp, err := Control(sock, ControlRequest{Cmd: "weight", Path: "p1", Weight: 9})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Paths) != 2 || resp.Paths[1].Weight != 9 || !resp.Paths[0].Up {
		t.Fatalf("status %+v", resp.Paths)
	}
	ba.Close()
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("control socket left after Close")
	}
}

// TestFailedStartLeavesNothing: a host change that fails midway is undone,
// the TUN deleted.
func TestFailedStartLeavesNothing(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	before := a.rec.State()
	a.rec.Fail["rule add"] = errors.New("injected")
	if _, err := Start(a.cfg, a.deps()); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("Start: %v", err)
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("a failed start left changes:\nbefore %q\nafter  %q", before, after)
	}
}

// TestTooManySegmentsKeepsThePackets: packets a TUN read returns together
// with tun.ErrTooManySegments are sent, and the error counted.
func TestTooManySegmentsKeepsThePackets(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	ba, bb := start(t, a), start(t, b)
	waitUp(t, ba, bb)
	ta, tb := a.tun, b.tun
	ta.TooManySegmentsNext()
	ping := tuntest.Ping(netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.0.1"))
	ta.Ch.Outbound <- ping
	select {
	case got := <-tb.Ch.Inbound:
		if !bytes.Equal(got, ping) {
			t.Fatal("packet changed in transit")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the packet read with ErrTooManySegments was dropped")
	}
	if n := ba.Engine().Stats.TUNReadErrors.Load(); n != 1 {
		t.Fatalf("TUN read errors %d, want 1", n)
	}
	select {
	case <-ba.Done():
		t.Fatalf("ErrTooManySegments stopped the bond: %v", ba.Err())
	default:
	}
}

// TestTUNGoneStopsTheBond: a TUN whose reads fail (deleted under the bond)
// stops it by itself, with the reason, its paths no longer up, the error in
// the log.
func TestTUNGoneStopsTheBond(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	ba, bb := start(t, a), start(t, b)
	waitUp(t, ba, bb)
	a.tun.FailReads(&os.PathError{Op: "read", Path: "/dev/net/tun", Err: syscall.EBADFD})
	select {
	case <-ba.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the bond runs on without its TUN")
	}
	if err := ba.Err(); !errors.Is(err, syscall.EBADFD) || !strings.Contains(err.Error(), "TUN") {
		t.Fatalf("Err() = %v", err)
	}
	for _, p := range ba.Engine().Status() {
		if p.Up {
			t.Fatalf("path %s still up after the bond stopped", p.Name)
		}
	}
	if !strings.Contains(a.logs.String(), "level=ERROR") {
		t.Fatalf("no error logged:\n%s", a.logs.String())
	}
	// The peer sees the paths go down: the keepalives stopped.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := bb.Engine().WaitPath(ctx, "p0", false); err != nil {
		t.Fatal(err)
	}
}

// TestRunReturnsTheFatalError: Run returns why the bond stopped by itself
// (the command exits 1 on it) and restores the host; on ctx it returns nil.
func TestRunReturnsTheFatalError(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	before := a.rec.State()
	start(t, b)
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), a.cfg, a.deps()) }()
	a.tun.FailReads(io.ErrUnexpectedEOF)
	select {
	case err := <-done:
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the TUN failed")
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("host not restored:\nbefore %q\nafter  %q", before, after)
	}
}

func TestRunStopsOnContext(t *testing.T) {
	a := newSite(t, siteA)
	b := newSite(t, siteB)
	connect(a, b)
	before := a.rec.State()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, a.cfg, a.deps()) }()
	select { // started far enough to have opened its TUN
	case <-a.tun.Opened():
	case <-time.After(5 * time.Second):
		t.Fatal("the bond opened no TUN")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v on a cancelled context", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after ctx ended")
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("host not restored:\nbefore %q\nafter  %q", before, after)
	}
}
