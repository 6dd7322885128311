package lab

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/tunnel/header"
)

func TestUDPFrames(t *testing.T) {
	dst, src := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	frames := udpFrames(dst, src, netip.MustParseAddr("10.10.0.2"), netip.MustParseAddr(DirectorVIP), 40000, 9, smallIPBytes, 64)
	if len(frames) != 64 {
		t.Fatalf("%d frames", len(frames))
	}
	check := func(f []byte, sport uint16) {
		t.Helper()
		ip := f[14:]
		if len(f) != 14+64 || string(f[:6]) != string(dst) || string(f[6:12]) != string(src) || f[12] != 8 || f[13] != 0 {
			t.Fatalf("ethernet header % x", f[:14])
		}
		if ip[0] != 0x45 || binary.BigEndian.Uint16(ip[2:]) != 64 || ip[9] != 17 || header.Checksum(ip[:20], 0) != 0xffff {
			t.Fatalf("ip header % x", ip[:20])
		}
		if got := binary.BigEndian.Uint16(ip[20:]); got != sport {
			t.Fatalf("source port %d, want %d", got, sport)
		}
		if binary.BigEndian.Uint16(ip[22:]) != 9 || binary.BigEndian.Uint16(ip[24:]) != 44 || ip[26] != 0 || ip[27] != 0 {
			t.Fatalf("udp header % x", ip[20:28])
		}
		if netip.AddrFrom4([4]byte(ip[16:20])).String() != DirectorVIP {
			t.Fatalf("destination %v", ip[16:20])
		}
	}
	for i, f := range frames {
		check(f, 40000+uint16(i))
	}
	// New flows: every packet a 5-tuple not seen, headers still right.
	w := &newFlows{base: [4]byte{10, 10, 0, 0}}
	seen := map[[6]byte]bool{}
	for b := 0; b < 3000; b++ { // 192000 packets: the address wraps twice
		w.next(frames)
		for _, f := range frames {
			var k [6]byte
			copy(k[:], f[14+12:14+16])
			copy(k[4:], f[14+20:14+22])
			if seen[k] {
				t.Fatalf("flow %v seen twice", k)
			}
			seen[k] = true
			if f[26] != 10 || f[27] != 10 || header.Checksum(f[14:34], 0) != 0xffff {
				t.Fatalf("ip header % x", f[14:34])
			}
			if p := binary.BigEndian.Uint16(f[34:]); p < 1024 {
				t.Fatalf("source port %d", p)
			}
		}
	}
}

// TestSinkDropsTunnelsPassesTheRest: frames from the packet sender reach
// the other end but for IPIP and GRE, which its sink drops; ARP passes.
func TestSinkDropsTunnelsPassesTheRest(t *testing.T) {
	requireRoot(t)
	n, err := netns.Topology{Namespaces: []string{"a", "b"}, Links: []netns.Link{
		{A: netns.End{NS: "a", Name: "eth0", Addr: "10.1.0.1/24"}, B: netns.End{NS: "b", Name: "eth0", Addr: "10.1.0.2/24"}}}}.Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	stop, err := sinkTunnels(n.NS("b"), "eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	var ln net.PacketConn
	if err := n.NS("b").Do(func() (err error) { ln, err = net.ListenPacket("udp4", "10.1.0.2:7000"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// A datagram through a socket: a asks for b's MAC by ARP, through the sink.
	var c net.Conn
	if err := n.NS("a").Do(func() (err error) { c, err = net.Dial("udp4", "10.1.0.2:7000"); return }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("hello"))
	buf := make([]byte, 2048)
	ln.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := ln.ReadFrom(buf); err != nil {
		t.Fatalf("no datagram through the sink (ARP dropped?): %v", err)
	}

	ethB, _ := n.NS("b").NL.LinkByName("eth0")
	ethA, _ := n.NS("a").NL.LinkByName("eth0")
	frames := udpFrames(ethB.Attrs().HardwareAddr, ethA.Attrs().HardwareAddr, netip.MustParseAddr("10.1.0.1"),
		netip.MustParseAddr("10.1.0.2"), 7000, 7000, smallIPBytes, 64)
	s, err := newFrameSender(n.NS("a"), "eth0", frames)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tt := range []struct {
		proto byte
		pass  bool
	}{{17, true}, {4, false}, {47, false}, {6, true}} {
		for i, f := range frames {
			f[14+9] = tt.proto
			setFlow(f, [4]byte{10, 1, 0, 1}, 7000+uint16(i))
		}
		before := ipInReceives(t, n)
		if k, err := s.send(); k != len(frames) || err != nil {
			t.Fatalf("protocol %d: sent %d: %v", tt.proto, k, err)
		}
		time.Sleep(100 * time.Millisecond)
		got := ipInReceives(t, n) - before
		if tt.pass && got < int64(len(frames)) || !tt.pass && got != 0 {
			t.Errorf("protocol %d: b received %d IP packets of %d sent (pass %v)", tt.proto, got, len(frames), tt.pass)
		}
	}
}

func TestAliveSeesAZombieDead(t *testing.T) {
	c := exec.Command("sleep", "0.1")
	if err := c.Start(); err != nil {
		t.Skip(err)
	}
	if !alive(c.Process.Pid) {
		t.Error("a sleeping process is not alive")
	}
	time.Sleep(500 * time.Millisecond) // exited, not waited for: a zombie
	if alive(c.Process.Pid) {
		t.Error("a zombie is alive")
	}
	c.Wait()
}
