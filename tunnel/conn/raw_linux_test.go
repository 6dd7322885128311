package conn

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The addresses rawNetns puts on lo: a raw socket gets every packet of its
// protocol to its bound address, so each end has its own.
var (
	raw6A = netip.MustParseAddr("fd00:7b::1")
	raw6B = netip.MustParseAddr("fd00:7b::2")
	raw4A = netip.MustParseAddr("127.0.0.1")
	raw4B = netip.MustParseAddr("127.0.0.2") // on lo with the rest of 127/8
)

// rawNetns creates an unnamed network namespace (gone with its last
// handle and socket, so nothing is left behind whatever happens) with lo
// up and raw6A and raw6B on it.
func rawNetns(t testing.TB) vnetns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (raw sockets, network namespaces); CI runs it as root")
	}
	var ns vnetns.NsHandle
	err := onNetnsThread(t, func() (err error) {
		ns, err = vnetns.New() // moves this thread into it
		return err
	})
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	// An IPv6 address takes its local route (without which packets to it
	// are sent but dropped on the way in) from a kernel worker, after
	// AddrAdd returns even without DAD: wait for those routes.
	routes := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	defer func() {
		close(done)
		go func() {
			for range routes { // until the subscription's goroutine closes it
			}
		}()
	}()
	if err := netlink.RouteSubscribeWithOptions(routes, done, netlink.RouteSubscribeOptions{Namespace: &ns}); err != nil {
		t.Fatal(err)
	}
	pending := map[netip.Addr]bool{}
	for _, a := range []netip.Addr{raw6A, raw6B} {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(128, 128)}, Flags: unix.IFA_F_NODAD}
		if err := nl.AddrAdd(lo, addr); err != nil {
			t.Fatalf("add %v to lo: %v", a, err)
		}
		pending[a] = true
	}
	timeout := time.After(20 * time.Second)
	for len(pending) > 0 {
		select {
		case u, ok := <-routes:
			if !ok {
				t.Fatal("route subscription ended")
			}
			if u.Type == unix.RTM_NEWROUTE && u.Table == unix.RT_TABLE_LOCAL && u.Route.Type == unix.RTN_LOCAL && u.Dst != nil {
				if a, ok := netip.AddrFromSlice(u.Dst.IP); ok {
					delete(pending, a)
				}
			}
		case <-timeout:
			t.Fatalf("no local route for %v", pending)
		}
	}
	return ns
}

// onNetnsThread runs fn, which may move the thread into another network
// namespace, on a locked OS thread, and brings the thread back to the
// namespace it was in.
func onNetnsThread(t testing.TB, fn func() error) error {
	t.Helper()
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	err = fn()
	if serr := vnetns.Set(orig); serr != nil {
		// The thread is stuck in the namespace: it stays locked and dies
		// with this goroutine.
		t.Fatalf("back to the original namespace: %v", serr)
	}
	runtime.UnlockOSThread()
	return err
}

// openRawIn opens an uplink inside ns; its receivers give up after 20 s so
// a lost packet fails the test instead of hanging it.
func openRawIn(t testing.TB, ns vnetns.NsHandle, cfg RawConfig) *RawUplink {
	t.Helper()
	var u *RawUplink
	err := onNetnsThread(t, func() error {
		if err := vnetns.Set(ns); err != nil {
			return err
		}
		var err error
		u, err = OpenRaw(cfg)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	for _, s := range u.socks {
		if err := s.f.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return u
}

// rawPair opens two uplinks in ns, a on la and b on lb, each the other's
// remote.
func rawPair(t testing.TB, ns vnetns.NsHandle, la, lb netip.Addr, protos ...uint8) (a, b *RawUplink) {
	t.Helper()
	a = openRawIn(t, ns, RawConfig{Local: la, Remote: lb, Protocols: protos})
	b = openRawIn(t, ns, RawConfig{Local: lb, Remote: la, Protocols: protos})
	return a, b
}

// grePackets returns packets of the given sizes (total, with a 4-byte GRE
// header carrying IPv4) whose bytes depend on seed and their index.
func grePackets(seed int, sizes ...int) [][]byte {
	pkts := packets(seed, sizes...)
	for _, p := range pkts {
		copy(p, []byte{0, 0, 0x08, 0x00})
	}
	return pkts
}

// checkFrom checks that every from is addr with port 0.
func checkFrom(t testing.TB, from []netip.AddrPort, addr netip.Addr) {
	t.Helper()
	for i, f := range from {
		if f != netip.AddrPortFrom(addr, 0) {
			t.Fatalf("packet %d: from %v, want %v", i, f, netip.AddrPortFrom(addr, 0))
		}
	}
}

func TestRawUplinkIPv6Exchange(t *testing.T) {
	ns := rawNetns(t)
	a, b := rawPair(t, ns, raw6A, raw6B, 47)
	if a.OuterHeader() || b.OuterHeader() {
		t.Fatal("OuterHeader() = true for an IPv6 uplink")
	}
	sizes := []int{4, 60, 1400, 1500, 9000, 200}
	sizes = append(sizes, repeat(40, 1300)...)
	for dir, ends := range [][2]*RawUplink{{a, b}, {b, a}} {
		tx, rx := ends[0], ends[1]
		pkts := grePackets(dir, sizes...)
		if n, err := tx.Send(pkts); n != len(pkts) || err != nil {
			t.Fatalf("Send: %d, %v; want %d", n, err, len(pkts))
		}
		r := newReceiver(rx.Receivers()[0], 16, 9100) // several calls
		got, from := r.collect(t, len(pkts))
		checkSame(t, got, pkts)
		checkFrom(t, from, tx.cfg.Local)
	}

	// A packet too big for its buffer has size 0; from == nil is fine.
	pkts := grePackets(7, 3000, 100)
	if n, err := a.Send(pkts); n != 2 || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	r := newReceiver(b.Receivers()[0], 2, 2048)
	for got := 0; got < 2; {
		k, err := r.fn(r.bufs[got:], r.sizes[got:], nil)
		if err != nil {
			t.Fatal(err)
		}
		got += k
	}
	if r.sizes[0] != 0 || !bytes.Equal(r.bufs[1][:r.sizes[1]], pkts[1]) {
		t.Fatalf("sizes %v, second packet %x…; want 0 for the first, the second intact", r.sizes, head(r.bufs[1][:r.sizes[1]]))
	}
}

func TestRawUplinkIPv4Exchange(t *testing.T) {
	ns := rawNetns(t)
	a, b := rawPair(t, ns, raw4A, raw4B, 47)
	if !a.OuterHeader() {
		t.Fatal("OuterHeader() = false for an IPv4 uplink")
	}
	pkts := grePackets(3, append([]int{4, 1400, 200}, repeat(30, 1000)...)...)
	if n, err := a.Send(pkts); n != len(pkts) || err != nil {
		t.Fatalf("Send: %d, %v; want %d", n, err, len(pkts))
	}
	r := newReceiver(b.Receivers()[0], 16, 2048)
	sentinel := netip.MustParseAddrPort("192.0.2.9:9")
	for i := range r.from {
		r.from[i] = sentinel
	}
	got, from := r.collect(t, len(pkts))
	for i, p := range got {
		if len(p) < 20 || p[0] != 0x45 || p[9] != 47 {
			t.Fatalf("packet %d: %x…: want an outer IPv4 header (no options) for protocol 47", i, head(p))
		}
		if src, dst := netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20])); src != raw4A || dst != raw4B {
			t.Fatalf("packet %d: %v→%v, want %v→%v", i, src, dst, raw4A, raw4B)
		}
		if tot := int(binary.BigEndian.Uint16(p[2:4])); tot != len(p) {
			t.Fatalf("packet %d: total length %d, read %d bytes", i, tot, len(p))
		}
		got[i] = p[20:]
		if from[i] != sentinel {
			t.Fatalf("packet %d: from set to %v by an IPv4 receiver", i, from[i])
		}
	}
	checkSame(t, got, pkts)
}

// IPIP over IPv6: IPv4 inner packets on the protocol 4 socket, IPv6 ones on
// the protocol 41 one.
func TestRawUplinkIPv6IPIP(t *testing.T) {
	ns := rawNetns(t)
	a, b := rawPair(t, ns, raw6A, raw6B, 4, 41)
	pkts := packets(9, 100, 200, 300, 400, 500, 600)
	for i, p := range pkts {
		p[0] = 0x45
		if i%3 == 2 {
			p[0] = 0x60
		}
	}
	if n, err := a.Send(pkts); n != len(pkts) || err != nil {
		t.Fatalf("Send: %d, %v", n, err)
	}
	v4, from4 := newReceiver(b.Receivers()[0], 8, 2048).collect(t, 4)
	v6, from6 := newReceiver(b.Receivers()[1], 8, 2048).collect(t, 2)
	checkSame(t, v4, [][]byte{pkts[0], pkts[1], pkts[3], pkts[4]})
	checkSame(t, v6, [][]byte{pkts[2], pkts[5]})
	checkFrom(t, append(from4, from6...), raw6A)
}

func TestRawUplinkIPv6SendTo(t *testing.T) {
	ns := rawNetns(t)
	dir := openRawIn(t, ns, RawConfig{Local: raw6A, Protocols: []uint8{47}}) // a director: no remote
	rs := openRawIn(t, ns, RawConfig{Local: raw6B, Remote: raw6A, Protocols: []uint8{47}})
	r := newReceiver(rs.Receivers()[0], 16, 2048)

	pkts := grePackets(11, repeat(5, 500)...)
	dsts := []netip.Addr{raw6B, raw6B, raw6B, raw6B, raw6B}
	if n, err := dir.SendTo(pkts, dsts); n != len(pkts) || err != nil {
		t.Fatalf("SendTo: %d, %v", n, err)
	}
	got, from := r.collect(t, len(pkts))
	checkSame(t, got, pkts)
	checkFrom(t, from, raw6A)

	// An IPv4 destination stops the batch there.
	dsts[3] = netip.MustParseAddr("192.0.2.1")
	n, err := dir.SendTo(pkts, dsts)
	if n != 3 || err == nil || !strings.Contains(err.Error(), "192.0.2.1") || !strings.Contains(err.Error(), "IPv4") {
		t.Fatalf("SendTo with an IPv4 destination from an IPv6 uplink: %d, %v; want 3 and an error naming it", n, err)
	}
	got, _ = r.collect(t, 3)
	checkSame(t, got, pkts[:3])

	if n, err := dir.SendTo(pkts, dsts[:2]); n != 0 || err == nil {
		t.Fatalf("SendTo with too few destinations: %d, %v", n, err)
	}
}

func TestRawUplinkIPv4SendToIPv6(t *testing.T) {
	ns := rawNetns(t)
	dir := openRawIn(t, ns, RawConfig{Local: raw4A, Protocols: []uint8{47}})
	n, err := dir.SendTo(grePackets(1, 100), []netip.Addr{raw6B})
	if n != 0 || err == nil || !strings.Contains(err.Error(), raw6B.String()) {
		t.Fatalf("SendTo an IPv6 destination from an IPv4 uplink: %d, %v", n, err)
	}
}

func TestRawUplinkConfigErrors(t *testing.T) {
	for _, c := range []struct {
		cfg  RawConfig
		want []string
	}{
		{RawConfig{Local: raw4A, Remote: raw6B}, []string{raw4A.String(), raw6B.String(), "IPv4", "IPv6", "family"}},
		{RawConfig{Local: raw6A, Remote: raw4B}, []string{raw6A.String(), raw4B.String(), "IPv4", "IPv6", "family"}},
		{RawConfig{Local: netip.MustParseAddr("fe80::1%lo"), Remote: raw6B}, []string{"fe80::1", "link-local"}},
		{RawConfig{Local: raw6A, Remote: netip.MustParseAddr("fe80::2")}, []string{"fe80::2", "link-local"}},
		{RawConfig{}, []string{"no local address"}},
	} {
		c.cfg.Protocols = []uint8{47}
		u, err := OpenRaw(c.cfg)
		if err == nil {
			u.Close()
			t.Fatalf("%v→%v: no error", c.cfg.Local, c.cfg.Remote)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v→%v: %q does not say %q", c.cfg.Local, c.cfg.Remote, err, w)
			}
		}
	}
}

func TestRawUplinkIPv6CloseWakesReceiver(t *testing.T) {
	ns := rawNetns(t)
	u := openRawIn(t, ns, RawConfig{Local: raw6A, Remote: raw6B, Protocols: []uint8{47}})
	closeWakesReceiver(t, u, "(*rawSocket).receive")
}

func TestRawUplinkIPv6Allocs(t *testing.T) {
	ns := rawNetns(t)
	a, b := rawPair(t, ns, raw6A, raw6B, 47)
	r := newReceiver(b.Receivers()[0], 64, 2048)
	pkts := grePackets(4, append(repeat(40, 1400), repeat(24, 200)...)...)
	dsts := make([]netip.Addr, len(pkts))
	for i := range dsts {
		dsts[i] = raw6B
	}
	recvAll := func() {
		if err := r.receiveN(len(pkts)); err != nil {
			panic(err)
		}
	}
	allocs := testing.AllocsPerRun(100, func() {
		if n, err := a.Send(pkts); n != len(pkts) || err != nil {
			panic(fmt.Sprint("Send: ", n, err))
		}
		recvAll()
		if n, err := a.SendTo(pkts, dsts); n != len(pkts) || err != nil {
			panic(fmt.Sprint("SendTo: ", n, err))
		}
		recvAll()
	})
	if allocs != 0 {
		t.Fatalf("Send+receive and SendTo+receive of a batch: %v allocations, want 0", allocs)
	}
}

// BenchmarkRawUplinkIPv6 sends and receives 64 packets of 1400 bytes over
// loopback per iteration.
func BenchmarkRawUplinkIPv6(b *testing.B) {
	ns := rawNetns(b)
	tx, rx := rawPair(b, ns, raw6A, raw6B, 47)
	r := newReceiver(rx.Receivers()[0], 64, 2048)
	benchmarkExchange(b, tx, r, grePackets(5, repeat(64, 1400)...))
}
