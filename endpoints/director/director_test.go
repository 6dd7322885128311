package director

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// tcp builds an IPv4 TCP packet of size bytes.
func tcp(src string, sport uint16, dst string, dport uint16, flags uint8, size int, df bool) []byte {
	p := make([]byte, size)
	header.EncodeIPv4(p, size, 64, 6, netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4())
	if df {
		p[6] = 0x40
		binary.BigEndian.PutUint16(p[10:12], 0)
		binary.BigEndian.PutUint16(p[10:12], ^header.Checksum(p[:20], 0))
	}
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	p[32] = 5 << 4
	p[33] = flags
	return p
}

func newDirector(t *testing.T, lines ...string) *Director {
	t.Helper()
	d := New(1000, DefaultTimeouts, 1500, encap.IPIP{})
	for _, l := range lines {
		c, err := ParseCommand(strings.Fields(l))
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Apply(c); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	return d
}

func client(i int) string {
	return netip.AddrFrom4([4]byte{198, 51, byte(100 + i/60000), byte(i % 250)}).String()
}

func TestDirectorSpreadsAndKeepsConnections(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s rr", "-a -t 192.0.2.10:80 -r 10.0.0.1 -w 1",
		"-a -t 192.0.2.10:80 -r 10.0.0.2 -w 1", "-a -t 192.0.2.10:80 -r 10.0.0.3 -w 1")
	d.Lock()
	defer d.Unlock()
	count := map[netip.AddrPort]int{}
	for i := 0; i < 3000; i++ {
		v := d.Process(tcp(client(i), uint16(10000+i), "192.0.2.10", 80, FlagSYN, 60, true), t0)
		if !v.Forward {
			t.Fatalf("SYN %d not forwarded: %v", i, v.Drop)
		}
		count[v.Real]++
	}
	for r, n := range count {
		if n != 1000 {
			t.Fatalf("rr sent %d of 3000 to %s", n, r)
		}
	}
	// A connection's later packets follow it, whatever the weights do.
	first := d.Process(tcp("203.0.113.5", 4000, "192.0.2.10", 80, FlagSYN, 60, true), t0).Real
	d.Unlock()
	for _, l := range []string{"-e -t 192.0.2.10:80 -r 10.0.0.1 -w 0", "-e -t 192.0.2.10:80 -r 10.0.0.2 -w 7", "-a -t 192.0.2.10:80 -r 10.0.0.4 -w 5"} {
		c, _ := ParseCommand(strings.Fields(l))
		if err := d.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	d.Lock()
	for k := 0; k < 10; k++ {
		if v := d.Process(tcp("203.0.113.5", 4000, "192.0.2.10", 80, FlagACK, 1000, true), t0); v.Real != first {
			t.Fatalf("connection moved from %s to %s", first, v.Real)
		}
	}
}

func TestDirectorDrops(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s wlc", "-a -t 192.0.2.10:80 -r 10.0.0.1")
	d.Lock()
	defer d.Unlock()
	for _, tt := range []struct {
		pkt  []byte
		want Drop
	}{
		{tcp("198.51.100.1", 1, "192.0.2.10", 81, FlagSYN, 60, false), DropNoService},
		{tcp("198.51.100.1", 1, "192.0.2.10", 80, FlagACK, 60, false), DropNoConn},
		{[]byte{0x45, 0, 0}, DropNotIP},
		{nil, DropNotIP},
	} {
		if v := d.Process(tt.pkt, t0); v.Forward || v.Drop != tt.want {
			t.Errorf("verdict %+v, want drop %v", v, tt.want)
		}
	}
}

func TestDirectorPMTU(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s rr", "-a -t 192.0.2.10:80 -r 10.0.0.1")
	d.Lock()
	defer d.Unlock()
	syn := tcp("198.51.100.1", 5000, "192.0.2.10", 80, FlagSYN, 60, true)
	if v := d.Process(syn, t0); !v.Forward {
		t.Fatal("SYN dropped")
	}
	big := tcp("198.51.100.1", 5000, "192.0.2.10", 80, FlagACK, 1500, true)
	v := d.Process(big, t0)
	if v.Forward || v.Reply == 0 || v.Drop != DropFragNeeded {
		t.Fatalf("1500-byte DF packet: %+v", v)
	}
	icmp := d.ICMP()[:v.Reply]
	if icmp[20] != 3 || icmp[21] != 4 || binary.BigEndian.Uint16(icmp[26:28]) != 1480 {
		t.Fatalf("ICMP type %d code %d mtu %d, want 3/4/1480", icmp[20], icmp[21], binary.BigEndian.Uint16(icmp[26:28]))
	}
	if src := netip.AddrFrom4([4]byte(icmp[12:16])); src.String() != "192.0.2.10" || icmp[16] != 198 {
		t.Fatalf("ICMP from %s", src)
	}
	if v := d.Process(tcp("198.51.100.1", 5000, "192.0.2.10", 80, FlagACK, 1480, true), t0); !v.Forward {
		t.Fatal("a 1480-byte packet should fit in 1500 with IPIP")
	}
	if v := d.Process(tcp("198.51.100.1", 5000, "192.0.2.10", 80, FlagACK, 1500, false), t0); v.Drop != DropTooBig {
		t.Fatalf("no-DF oversize: %+v", v)
	}
}

func TestDirectorPersistenceAndHealth(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s rr -p 300", "-a -t 192.0.2.10:80 -r 10.0.0.1",
		"-a -t 192.0.2.10:80 -r 10.0.0.2", "-a -t 192.0.2.10:80 -r 10.0.0.3")
	vip := netip.MustParseAddrPort("192.0.2.10:80")
	d.Lock()
	first := d.Process(tcp("198.51.100.9", 1000, "192.0.2.10", 80, FlagSYN, 60, true), t0).Real
	for p := uint16(1001); p < 1020; p++ {
		if v := d.Process(tcp("198.51.100.9", p, "192.0.2.10", 80, FlagSYN, 60, true), t0); v.Real != first {
			t.Fatalf("persistent client moved from %s to %s", first, v.Real)
		}
	}
	d.Unlock()
	if err := d.SetHealth(6, vip, first, false, true); err != nil {
		t.Fatal(err)
	}
	d.Lock()
	defer d.Unlock()
	if d.table.Lookup(Key{Proto: 6, Client: netip.MustParseAddrPort("198.51.100.9:1000"), VIP: vip}, FlagACK, 60, t0) != nil {
		t.Fatal("connections of a failed server kept with expire_nodest_conn")
	}
	for i := 0; i < 100; i++ {
		if v := d.Process(tcp(client(i), 2000, "192.0.2.10", 80, FlagSYN, 60, true), t0); v.Real == first {
			t.Fatal("a failed server got a new connection")
		}
	}
}

func FuzzDirectorProcess(f *testing.F) {
	f.Add(tcp("198.51.100.1", 1, "192.0.2.10", 80, FlagSYN, 60, true))
	f.Add(tcp("198.51.100.1", 1, "192.0.2.10", 80, FlagACK, 1500, true))
	// One director for every input (as in life, state carries over): building
	// a Maglev table per input would make the fuzzer crawl.
	d := New(100, DefaultTimeouts, 1500, encap.IPIP{})
	for _, l := range []string{"-A -t 192.0.2.10:80 -s mh", "-a -t 192.0.2.10:80 -r 10.0.0.1", "-A -u 192.0.2.10:0 -s rr -p 60", "-a -u 192.0.2.10:0 -r 10.0.0.2"} {
		c, _ := ParseCommand(strings.Fields(l))
		d.Apply(c)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		d.Lock()
		d.Process(pkt, t0)
		d.Unlock()
	})
}

func TestDirectorPMTUv6(t *testing.T) {
	d := newDirector(t, "-A -t [2001:db8::10]:80 -s rr", "-a -t [2001:db8::10]:80 -r 10.0.0.1")
	pkt := make([]byte, 1500)
	copy(pkt, []byte{0x60, 0, 0, 0, 0x05, 0xb4, 6, 64})
	copy(pkt[8:24], netip.MustParseAddr("2001:db8::1").AsSlice())
	copy(pkt[24:40], netip.MustParseAddr("2001:db8::10").AsSlice())
	binary.BigEndian.PutUint16(pkt[40:], 5555)
	binary.BigEndian.PutUint16(pkt[42:], 80)
	pkt[53] = FlagACK
	d.Lock()
	defer d.Unlock()
	v := d.Process(pkt, t0)
	if v.Reply == 0 || d.ICMP()[40] != 2 || binary.BigEndian.Uint32(d.ICMP()[44:48]) != 1480 {
		t.Fatalf("IPv6 too big: %+v", v)
	}
	syn := append([]byte(nil), pkt[:60]...)
	binary.BigEndian.PutUint16(syn[4:6], 20)
	syn[53] = FlagSYN
	if v := d.Process(syn, t0); !v.Forward || v.Real.String() != "10.0.0.1:80" {
		t.Fatalf("IPv6 SYN to an IPv6 VIP: %+v", v)
	}
}

// TestPortZeroServiceCounts: a port-0 service's connections go to the
// client's port on the real server, and still count on that server.
func TestPortZeroServiceCounts(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:0 -s rr", "-a -t 192.0.2.10:0 -r 10.0.0.1")
	d.Lock()
	v := d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 443, FlagSYN, 60, true), t0)
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 443, FlagACK, 100, true), t0)
	d.Unlock()
	if !v.Forward || v.Real.String() != "10.0.0.1:443" {
		t.Fatalf("verdict %+v", v)
	}
	out, _ := d.Admin([]string{"-L", "-n", "--stats"}, "", t0)
	found := false
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[1] == "10.0.0.1:0" {
			found = f[2] == "1" && f[3] == "2" // 1 connection, 2 packets
		}
	}
	if !found {
		t.Fatalf("port-0 service's real server not counted:\n%s", out)
	}
}

// TestMHTakesAConnectionMidway: two directors with the same mh service;
// a connection begun on the first arrives mid-way (no SYN) at the second,
// which makes the entry for the same real server (the flow moved after a
// director's loss). rr drops such a packet: it cannot know the server.
func TestMHTakesAConnectionMidway(t *testing.T) {
	lines := []string{"-A -t 192.0.2.10:80 -s mh", "-a -t 192.0.2.10:80 -r 10.0.0.1", "-a -t 192.0.2.10:80 -r 10.0.0.2", "-a -t 192.0.2.10:80 -r 10.0.0.3"}
	first, second := newDirector(t, lines...), newDirector(t, lines...)
	for port := uint16(1000); port < 1100; port++ {
		v := first.Process(tcp("198.51.100.1", port, "192.0.2.10", 80, FlagSYN, 60, true), t0)
		w := second.Process(tcp("198.51.100.1", port, "192.0.2.10", 80, FlagACK, 60, true), t0)
		if !v.Forward || !w.Forward || v.Real != w.Real {
			t.Fatalf("port %d: the first director sent the SYN to %v, the second the next packet to %v (%v)", port, v.Real, w.Real, w.Drop)
		}
	}
	rr := newDirector(t, "-A -t 192.0.2.10:80 -s rr", "-a -t 192.0.2.10:80 -r 10.0.0.1")
	if v := rr.Process(tcp("198.51.100.1", 2000, "192.0.2.10", 80, FlagACK, 60, true), t0); v.Forward || v.Drop != DropNoConn {
		t.Fatalf("rr took a mid-connection packet: %+v", v)
	}
	// With persistence the client's server is remembered per director:
	// another cannot know it.
	persistent := newDirector(t, "-A -t 192.0.2.10:80 -s mh -p 300", "-a -t 192.0.2.10:80 -r 10.0.0.1", "-a -t 192.0.2.10:80 -r 10.0.0.2")
	if v := persistent.Process(tcp("198.51.100.1", 2000, "192.0.2.10", 80, FlagACK, 60, true), t0); v.Forward || v.Drop != DropNoConn {
		t.Fatalf("persistent mh took a mid-connection packet: %+v", v)
	}
}
