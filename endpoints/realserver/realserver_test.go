package realserver

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunbond/tunbond/endpoints/host/hosttest"
	"github.com/tunbond/tunbond/endpoints/role/roletest"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// fakeTransport delivers the outer IPv4 packets put on in to the agent's
// receiver, as a raw socket bound to the agent's address would.
type fakeTransport struct {
	in     chan []byte
	closed chan struct{}
	once   sync.Once
}

func newFakeTransport() *fakeTransport {
	return &fakeTransport{in: make(chan []byte, 16), closed: make(chan struct{})}
}

func (f *fakeTransport) open(conn.RawConfig) (Transport, error) { return f, nil }
func (f *fakeTransport) BatchSize() int                         { return 8 }
func (f *fakeTransport) Close() error                           { f.once.Do(func() { close(f.closed) }); return nil }

func (f *fakeTransport) Receivers() []conn.ReceiveFunc {
	return []conn.ReceiveFunc{func(bufs [][]byte, sizes []int, _ []netip.AddrPort) (int, error) {
		select {
		case p := <-f.in:
			sizes[0] = copy(bufs[0], p)
			return 1, nil
		case <-f.closed:
			return 0, errors.New("fake transport closed")
		}
	}}
}

// outer wraps inner in an outer IPv4 header of protocol proto, src → dst.
func outer(proto uint8, src, dst string, inner []byte) []byte {
	b := make([]byte, header.IPv4HeaderLen+len(inner))
	header.EncodeIPv4(b, len(b), 64, proto, netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4())
	copy(b[header.IPv4HeaderLen:], inner)
	return b
}

// clientPacket is a TCP packet from a client to the VIP, its source port
// telling packets apart.
func clientPacket(sport uint16) []byte {
	p := make([]byte, 40)
	header.EncodeIPv4(p, len(p), 64, 6, netip.MustParseAddr("198.51.100.1").As4(), netip.MustParseAddr(vip).As4())
	p[20], p[21] = byte(sport>>8), byte(sport)
	p[23] = 80
	p[32] = 5 << 4
	return p
}

const (
	vip      = "192.0.2.10"
	local    = "10.30.0.2"
	director = "10.20.0.2"
	stranger = "10.20.0.66"
	tunName  = "vip0"
)

type rig struct {
	rec  *hosttest.Recorder
	tun  *hosttest.TUN
	tr   *fakeTransport
	reg  *prometheus.Registry
	logs *roletest.Log
	cfg  Config
	deps Deps
}

func newRig(allRPFilter string) *rig {
	rec := hosttest.New("eth0")
	rec.SetSysctlValue(rpFilterKey("all"), allRPFilter)
	// The kernel gives a new interface default's value (the Recorder does too).
	rec.SetSysctlValue(rpFilterKey("default"), "1")
	r := &rig{rec: rec, tun: hosttest.NewTUN(rec), tr: newFakeTransport(),
		reg: prometheus.NewPedanticRegistry(), logs: &roletest.Log{}}
	r.cfg = Config{TUN: tunName, Local: netip.MustParseAddr(local), Directors: []netip.Addr{netip.MustParseAddr(director)},
		VIPs: []netip.Addr{netip.MustParseAddr(vip)}, Encap: encap.IPIP{}}
	r.deps = Deps{Host: rec, OpenTUN: r.tun.Open, OpenUplink: r.tr.open, Metrics: r.reg,
		Log: slog.New(slog.NewTextHandler(r.logs, nil))}
	return r
}

func (r *rig) start(t *testing.T) *Agent {
	t.Helper()
	a, err := Start(r.cfg, r.deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

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

// TestAgentDataLoop: an IPIP packet from a director puts its inner packet
// on the TUN; one from a stranger, one of the wrong protocol (GRE to an
// IPIP agent) and one whose inner destination is no VIP are counted and
// never reach the TUN.
func TestAgentDataLoop(t *testing.T) {
	r := newRig("0")
	a := r.start(t)
	good := clientPacket(1000)
	r.tr.in <- outer(header.ProtoIPIP, director, local, good)
	if got := await(t, r.tun.Ch.Inbound, "packet on the TUN"); !bytes.Equal(got, good) {
		t.Fatalf("on the TUN:\n%x\nwant the inner packet\n%x", got, good)
	}
	r.tr.in <- outer(header.ProtoIPIP, stranger, local, clientPacket(1001))
	r.tr.in <- outer(header.ProtoGRE, director, local, clientPacket(1002))
	notVIP := clientPacket(1004) // from a director, to an address that is no VIP of this host
	copy(notVIP[16:20], []byte{10, 30, 0, 7})
	r.tr.in <- outer(header.ProtoIPIP, director, local, notVIP)
	marker := clientPacket(1003)
	r.tr.in <- outer(header.ProtoIPIP, director, local, marker)
	// The receiver works in order: when the marker is on the TUN, the two
	// before it were decided.
	if got := await(t, r.tun.Ch.Inbound, "marker on the TUN"); !bytes.Equal(got, marker) {
		t.Fatalf("on the TUN before the marker: %x", got)
	}
	if got := a.Dropped[header.ErrWrongSource].Load(); got != 1 {
		t.Errorf("wrong_source drops %d, want 1", got)
	}
	if got := a.Dropped[header.ErrProtocol].Load(); got != 1 {
		t.Errorf("protocol drops %d, want 1", got)
	}
	if got := a.NotVIP.Load(); got != 1 {
		t.Errorf("not_vip drops %d, want 1", got)
	}
	select {
	case p := <-r.tun.Ch.Inbound:
		t.Fatalf("a dropped packet reached the TUN: %x", p)
	default:
	}
	mfs, err := r.reg.Gather()
	if err != nil || len(mfs) != 2 {
		t.Fatalf("metrics: %d families, %v", len(mfs), err)
	}
}

// TestAgentHostChanges: the VIP goes on the TUN, the TUN up, its own
// rp_filter to 2 (loose: the filter in force is max(all, its own)), and
// nothing else, `all` included, whatever it is; after Close the host is as
// it was.
func TestAgentHostChanges(t *testing.T) {
	for _, tc := range []struct {
		all   string
		calls []string
	}{{"1", nil}, {"2", nil}, {"0", nil}} {
		t.Run("all="+tc.all, func(t *testing.T) {
			r := newRig(tc.all)
			before := r.rec.State()
			a := r.start(t)
			want := append([]string{"addr replace 192.0.2.10/32 dev vip0", "link up vip0", "sysctl net.ipv4.conf.vip0.rp_filter=2"}, tc.calls...)
			if got := r.rec.Calls(); !reflect.DeepEqual(got, want) {
				t.Fatalf("host changes:\n%q\nwant\n%q", got, want)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			if after := r.rec.State(); !reflect.DeepEqual(after, before) {
				t.Fatalf("host after Close:\n%q\nwant as before\n%q", after, before)
			}
			if mfs, _ := r.reg.Gather(); len(mfs) != 0 {
				t.Fatalf("%d metric families left after Close", len(mfs))
			}
		})
	}
}

// TestAgentStopsWhenItsTUNIsDeleted: with no traffic at all, a TUN
// deleted under the agent makes Run return an error naming it, with a log
// line (defect 4), and `all`'s rp_filter is restored.
func TestAgentStopsWhenItsTUNIsDeleted(t *testing.T) {
	r := newRig("1")
	started := r.logs.Seen("real server agent started")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, r.cfg, r.deps) }()
	await(t, started, "start")
	r.tun.Close() // as `ip link del vip0` would, under the running agent
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatalf("Run did not stop when its TUN was deleted (it returned %v when cancelled)", <-errc)
	}
	if err == nil || !strings.Contains(err.Error(), "tun vip0") {
		t.Fatalf("Run returned %v, want the TUN's error", err)
	}
	if !strings.Contains(r.logs.String(), "real server agent stopped") {
		t.Fatalf("no log line:\n%s", r.logs)
	}
	if v, _ := r.rec.Sysctl(rpFilterKey("all")); v != "1" {
		t.Fatalf("all.rp_filter left at %s", v)
	}
	for _, s := range r.rec.State() {
		if strings.HasPrefix(s, "addr ") {
			t.Fatalf("left %s", s)
		}
	}
}
