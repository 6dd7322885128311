package conn

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/tunbond/tunbond/tunnel/header"
)

// ringNetns is rawNetns with a veth pair (MTU 9000), rv0 (192.0.2.1/24)
// and rv1, rv1 a port of the bridge rbr, and routes that send
// 203.0.113.0/24 and 2001:db8::/64 out of rv0 (to rv1's MAC, which is the
// bridge's, by fixed neighbours; 203.0.113.9's is another host's), so a
// packet sent there comes in on rv1 and up through rbr, where the ring
// sees it (and the kernel, not forwarding, drops it). lo will not do: an
// IPv6 route through lo is a reject route.
func ringNetns(t *testing.T) vnetns.NsHandle {
	ns := rawNetns(t)
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "rv0"}, PeerName: "rv1"}); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "rbr"}}); err != nil {
		t.Fatal(err)
	}
	rv0, _ := nl.LinkByName("rv0")
	rv1, _ := nl.LinkByName("rv1")
	rbr, _ := nl.LinkByName("rbr")
	if err := nl.LinkSetMaster(rv1, rbr); err != nil {
		t.Fatal(err)
	}
	for _, l := range []netlink.Link{rv0, rv1, rbr} {
		if err := nl.LinkSetMTU(l, 9000); err != nil { // a 3000-byte packet goes whole
			t.Fatal(err)
		}
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := nl.AddrAdd(rv0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(192, 0, 2, 1), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"203.0.113.0/24", "2001:db8::/64"} {
		_, dst, _ := net.ParseCIDR(p)
		if err := nl.RouteAdd(&netlink.Route{LinkIndex: rv0.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}); err != nil {
			t.Fatalf("route %s dev rv0: %v", p, err)
		}
	}
	for _, a := range []string{"203.0.113.7", "203.0.113.8", "203.0.113.9", "2001:db8::7", "2001:db8::8"} {
		mac := rv1.Attrs().HardwareAddr // the bridge's too: its one port's
		if a == "203.0.113.9" {
			mac = net.HardwareAddr{2, 0, 0, 0, 0, 0x99} // another host's, seen only as a promiscuous port
		}
		n := &netlink.Neigh{LinkIndex: rv0.Attrs().Index, IP: net.ParseIP(a), HardwareAddr: mac, State: netlink.NUD_PERMANENT}
		if err := nl.NeighAdd(n); err != nil {
			t.Fatalf("neighbour %s: %v", a, err)
		}
	}
	return ns
}

// inNetns runs fn on a thread in ns (sockets it opens belong to ns).
func inNetns(t *testing.T, ns vnetns.NsHandle, fn func() error) {
	t.Helper()
	if err := onNetnsThread(t, func() error {
		if err := vnetns.Set(ns); err != nil {
			return err
		}
		return fn()
	}); err != nil {
		t.Fatal(err)
	}
}

// readRing reads n packets from the ring, failing after 10 s.
func readRing(t *testing.T, r *PacketRing, n int) [][]byte {
	t.Helper()
	type result struct {
		pkts [][]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		var got [][]byte
		bufs := make([][]byte, r.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, 16+2048)
		}
		sizes := make([]int, len(bufs))
		for len(got) < n {
			k, err := r.Read(bufs, sizes, 16)
			if err != nil {
				done <- result{got, err}
				return
			}
			for i := 0; i < k; i++ {
				got = append(got, slices.Clone(bufs[i][16:16+sizes[i]]))
			}
		}
		done <- result{got, nil}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			t.Fatalf("ring read after %d packets: %v", len(res.pkts), res.err)
		}
		return res.pkts
	case <-time.After(10 * time.Second):
		t.Fatalf("the ring did not give %d packets in 10 s", n)
		return nil
	}
}

// TestRingTakesOnlyItsDestinations: UDP to the ring's destinations (the
// second of two IPv4 ones and the second of two IPv6 ones, which tests
// the filter's jumps) arrives whole, once (it crosses a bridge port and
// the bridge) and in order within its family (IPv4 and IPv6 have a ring
// each); packets to others, a frame to another host's
// MAC and a packet larger than a frame do not.
func TestRingTakesOnlyItsDestinations(t *testing.T) {
	ns := ringNetns(t)
	var r *PacketRing
	inNetns(t, ns, func() (err error) { r, err = OpenRing(RingConfig{Frames: 64}); return })
	t.Cleanup(func() { r.Close() })
	vip4, vip6 := netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("2001:db8::7")
	if err := r.SetDestinations([]netip.Addr{netip.MustParseAddr("203.0.113.1"), vip4, netip.MustParseAddr("203.0.113.9"),
		netip.MustParseAddr("2001:db8::1"), vip6}); err != nil {
		t.Fatal(err)
	}
	var c4, c6 *net.UDPConn
	inNetns(t, ns, func() (err error) {
		if c4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1)}); err != nil {
			return err
		}
		c6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: raw6A.AsSlice()})
		return err
	})
	defer c4.Close()
	defer c6.Close()
	send := func(c *net.UDPConn, dst string, payload string) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort([]byte(payload), netip.MustParseAddrPort(dst)); err != nil {
			t.Fatalf("to %s: %v", dst, err)
		}
	}
	send(c4, "203.0.113.8:9", "not ours")
	send(c4, "203.0.113.9:9", "not this host's MAC")
	send(c4, "203.0.113.7:9", "one")
	send(c6, "[2001:db8::8]:9", "not ours")
	send(c4, "203.0.113.7:9", string(make([]byte, 3000))) // larger than a frame
	send(c6, "[2001:db8::7]:9", "two")
	send(c4, "203.0.113.7:9", "three")
	got := readRing(t, r, 3)
	if len(got) != 3 {
		t.Fatalf("got %d packets, want 3: %x", len(got), got)
	}
	var got4, got6 []string
	for i, p := range got {
		if !udpChecksumOK(p) {
			t.Errorf("packet %d: UDP checksum not completed: %x", i, p)
		}
		if p[0]>>4 == 4 {
			ip := header.IPv4(p)
			if ip.Dst() != vip4 {
				t.Errorf("packet %d to %v", i, ip.Dst())
			}
			got4 = append(got4, string(p[ip.HeaderLen()+8:]))
		} else {
			if dst := netip.AddrFrom16([16]byte(p[24:40])); dst != vip6 {
				t.Errorf("packet %d to %v", i, dst)
			}
			got6 = append(got6, string(p[header.IPv6HeaderLen+8:]))
		}
	}
	if !slices.Equal(got4, []string{"one", "three"}) || !slices.Equal(got6, []string{"two"}) {
		t.Errorf("IPv4 %q, IPv6 %q; want [one three] and [two]", got4, got6)
	}
	if n := r.Truncated.Load(); n != 1 {
		t.Errorf("truncated: %d, want the one 3000-byte packet", n)
	}

	// The filter follows a change of the destinations.
	if err := r.SetDestinations([]netip.Addr{netip.MustParseAddr("203.0.113.8")}); err != nil {
		t.Fatal(err)
	}
	send(c4, "203.0.113.7:9", "no longer ours")
	send(c4, "203.0.113.8:9", "now ours")
	if p := readRing(t, r, 1)[0]; string(p[28:]) != "now ours" {
		t.Errorf("after the change: %q", p[28:])
	}
}

// udpChecksumOK says whether an IPv4 or IPv6 UDP packet's checksum is
// right (a sender on a veth leaves it to the device: the ring completes it).
func udpChecksumOK(p []byte) bool {
	l4, sum := pseudoSum(p)
	return header.Checksum(l4, uint32(sum)) == 0xffff
}

// pseudoSum is the folded sum of an IPv4 or IPv6 packet's pseudo-header
// for its transport (protocol, addresses, transport length), from the IP
// header's own lengths.
func pseudoSum(p []byte) (l4 []byte, sum uint16) {
	var pseudo []byte
	if p[0]>>4 == 4 {
		l4 = p[20:binary.BigEndian.Uint16(p[2:4])]
		pseudo = append(append([]byte{}, p[12:20]...), 0, p[9], byte(len(l4)>>8), byte(len(l4)))
	} else {
		l4 = p[40 : 40+int(binary.BigEndian.Uint16(p[4:6]))]
		pseudo = append(append([]byte{}, p[8:40]...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, p[6])
	}
	return l4, header.Checksum(pseudo, 0)
}

// udpPacket is an IPv4 or IPv6 UDP packet with a correct checksum.
func udpPacket(src, dst netip.AddrPort, payload string) []byte {
	var p []byte
	if src.Addr().Is4() {
		p = make([]byte, 28+len(payload))
		header.EncodeIPv4(p, len(p), 64, header.ProtoUDP, src.Addr().As4(), dst.Addr().As4())
	} else {
		p = make([]byte, 48+len(payload))
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:6], uint16(8+len(payload)))
		p[6], p[7] = header.ProtoUDP, 64
		s, d := src.Addr().As16(), dst.Addr().As16()
		copy(p[8:24], s[:])
		copy(p[24:40], d[:])
	}
	l4, sum := pseudoSum(p)
	binary.BigEndian.PutUint16(l4[0:2], src.Port())
	binary.BigEndian.PutUint16(l4[2:4], dst.Port())
	binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
	copy(l4[8:], payload)
	binary.BigEndian.PutUint16(l4[6:8], ^header.Checksum(l4, uint32(sum)))
	return p
}

// TestRingWritesWholePackets: Write sends IPv4 and IPv6 packets with a
// foreign source (a VIP's) as they are; a socket on their destination gets
// them from that source.
func TestRingWritesWholePackets(t *testing.T) {
	ns := ringNetns(t)
	var r *PacketRing
	var c4, c6 *net.UDPConn
	inNetns(t, ns, func() (err error) {
		if r, err = OpenRing(RingConfig{Frames: 64}); err != nil {
			return err
		}
		if c4, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		c6, err = net.ListenUDP("udp6", &net.UDPAddr{IP: raw6A.AsSlice()})
		return err
	})
	defer r.Close()
	defer c4.Close()
	defer c6.Close()
	for _, tt := range []struct {
		c    *net.UDPConn
		from netip.AddrPort
	}{{c4, netip.MustParseAddrPort("203.0.113.7:53")}, {c6, netip.MustParseAddrPort("[2001:db8::7]:53")}} {
		to := tt.c.LocalAddr().(*net.UDPAddr).AddrPort()
		pkt := append(make([]byte, 16), udpPacket(tt.from, netip.AddrPortFrom(to.Addr().Unmap(), to.Port()), "hello")...)
		if n, err := r.Write([][]byte{pkt}, 16); n != 1 || err != nil {
			t.Fatalf("write from %v: %d %v", tt.from, n, err)
		}
		tt.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 64)
		n, from, err := tt.c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "hello" || netip.AddrPortFrom(from.Addr().Unmap(), from.Port()) != tt.from {
			t.Fatalf("got %q from %v (%v), want hello from %v", buf[:n], from, err, tt.from)
		}
	}
}

// TestCompleteChecksum: a TCP or UDP packet whose checksum field holds
// only its pseudo-header's sum (as a sender that leaves the sum to the
// device sends it) gets its whole checksum, over the IP length and not
// the link's padding after it.
func TestCompleteChecksum(t *testing.T) {
	tcp4 := make([]byte, 40+5)
	header.EncodeIPv4(tcp4, len(tcp4), 64, header.ProtoTCP, [4]byte{198, 51, 100, 1}, [4]byte{203, 0, 113, 7})
	tcp4[32] = 5 << 4
	copy(tcp4[40:], "hello")
	for _, tt := range []struct {
		name string
		pkt  []byte
		at   int // the checksum's offset in the transport header
	}{
		{"tcp4", tcp4, 16},
		{"udp4", udpPacket(netip.MustParseAddrPort("198.51.100.1:9"), netip.MustParseAddrPort("203.0.113.7:53"), "hi"), 6},
		{"udp6", udpPacket(netip.MustParseAddrPort("[2001:db8::1]:9"), netip.MustParseAddrPort("[2001:db8::7]:53"), "hi"), 6},
	} {
		l4, sum := pseudoSum(tt.pkt)
		binary.BigEndian.PutUint16(l4[tt.at:], sum) // as the sender leaves it
		padded := append(slices.Clone(tt.pkt), 0xde, 0xad, 0xbe, 0xef, 0x55, 0xaa)
		completeChecksum(padded)
		l4, sum = pseudoSum(padded)
		if header.Checksum(l4, uint32(sum)) != 0xffff {
			t.Errorf("%s: checksum %x does not verify", tt.name, l4[tt.at:tt.at+2])
		}
	}
}

// TestRingCloseWakesRead: a Read waiting for packets returns os.ErrClosed
// when the ring is closed.
func TestRingCloseWakesRead(t *testing.T) {
	ns := ringNetns(t)
	var r *PacketRing
	inNetns(t, ns, func() (err error) { r, err = OpenRing(RingConfig{Frames: 64}); return })
	done := make(chan error, 1)
	go func() {
		bufs, sizes := [][]byte{make([]byte, 2048)}, []int{0}
		_, err := r.Read(bufs, sizes, 0)
		done <- err
	}()
	for r.ReadPolled.Load() == 0 { // the reader is in poll
		time.Sleep(time.Millisecond)
	}
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("read after close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read still waiting 10 s after close")
	}
}

// TestDestinationFilterLimit: the filter takes as many destinations as
// classic BPF's 4096 instructions hold and rejects everything past that.
func TestDestinationFilterLimit(t *testing.T) {
	dsts := func(n int) []netip.Addr {
		out := make([]netip.Addr, n)
		for i := range out {
			out[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		}
		return out
	}
	if !FilterFits(dsts(2000)) || FilterFits(dsts(2100)) {
		t.Fatalf("2000 fit: %v, 2100 fit: %v", FilterFits(dsts(2000)), FilterFits(dsts(2100)))
	}
	if FilterFits(dsts(0)) != true {
		t.Fatal("an empty set must fit")
	}
}
