package header

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// udp4 returns an IPv4/UDP packet of n bytes (n ≥ 28) for the given flow.
func udp4(n int, src uint32, sport uint16) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[9] = 17
	binary.BigEndian.PutUint32(p[12:], src)
	binary.BigEndian.PutUint32(p[16:], 0x0a4d0002)
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], 5201)
	return p
}

// udp6 is 2001:db8::1:54321 → 2001:db8::2:53, UDP, 4 bytes of payload.
var udp6 = mustHex("60000000000c1140" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "d4310035000c0000" + "61626364")

func TestViewsGolden(t *testing.T) {
	ip6 := IPv6(udp6)
	if err := ip6.Validate(); err != nil {
		t.Fatal(err)
	}
	if ip6.PayloadLen() != 12 || ip6.NextHeader() != ProtoUDP || ip6.HopLimit() != 64 ||
		ip6.Src() != netip.MustParseAddr("2001:db8::1") || ip6.Dst() != netip.MustParseAddr("2001:db8::2") {
		t.Fatalf("IPv6 view: len %d next %d hop %d %v → %v", ip6.PayloadLen(), ip6.NextHeader(), ip6.HopLimit(), ip6.Src(), ip6.Dst())
	}
	u := UDP(ip6.Payload())
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
	if u.SrcPort() != 54321 || u.DstPort() != 53 || u.Length() != 12 || string(u.Payload()) != "abcd" {
		t.Fatalf("UDP view: %d → %d len %d", u.SrcPort(), u.DstPort(), u.Length())
	}
	tcp := TCP(IPv4(tcpSYN).Payload())
	if err := tcp.Validate(); err != nil {
		t.Fatal(err)
	}
	if tcp.SrcPort() != 40000 || tcp.DstPort() != 80 || tcp.Flags() != TCPFlagSYN || tcp.DataOffset() != 20 || tcp.Window() != 0x2000 {
		t.Fatalf("TCP view: %d → %d flags %#x off %d win %d", tcp.SrcPort(), tcp.DstPort(), tcp.Flags(), tcp.DataOffset(), tcp.Window())
	}
	// Builders write the same bytes back.
	var b [IPv6HeaderLen + UDPHeaderLen]byte
	IPv6Fields{PayloadLen: 12, NextHeader: ProtoUDP, HopLimit: 64, Src: ip6.SrcBytes(), Dst: [16]byte(udp6[24:40])}.Encode(IPv6(b[:]))
	UDPFields{SrcPort: 54321, DstPort: 53, Length: 12}.Encode(UDP(b[IPv6HeaderLen:]))
	if got, want := hex.EncodeToString(b[:]), hex.EncodeToString(udp6[:48]); got != want {
		t.Fatalf("builders wrote\n%s\nwant\n%s", got, want)
	}
}

func TestViewsRejectShort(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"ipv6 header", IPv6(udp6[:39]).Validate()},
		{"ipv6 payload", IPv6(udp6[:50]).Validate()},
		{"udp header", UDP(udp6[40:47]).Validate()},
		{"udp length", UDP(append(append([]byte(nil), udp6[40:48]...), 0)[:8:8]).Validate()},
		{"tcp header", TCP(tcpSYN[20:39]).Validate()},
		{"tcp data offset", TCP(append([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0}, make([]byte, 7)...)).Validate()},
	}
	for _, tt := range tests {
		if tt.name == "udp length" {
			u := append([]byte(nil), udp6[40:48]...)
			u[5] = 9
			tt.err = UDP(u).Validate()
		}
		if !errors.Is(tt.err, ErrTooShort) {
			t.Errorf("%s: %v, want too short", tt.name, tt.err)
		}
	}
}

func TestFlowKeyIgnoresPortsOfFragments(t *testing.T) {
	a, b := udp4(60, 1, 1000), udp4(60, 1, 2000)
	if FlowKey(a) == FlowKey(b) {
		t.Fatal("different ports hash equal")
	}
	a[6], b[6] = 0x20, 0x20 // more fragments
	if FlowKey(a) != FlowKey(b) {
		t.Fatal("fragments of one flow hash apart")
	}
	if FlowKey(nil) != 0 || FlowKey([]byte{0x45}) != 0 {
		t.Fatal("short packets must hash to 0")
	}
}

func FuzzFlowKey(f *testing.F) {
	f.Add(udp4(60, 1, 1))
	f.Add(append([]byte{0x60}, make([]byte, 47)...))
	f.Add(append([]byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0, 0, 100, 0x08, 0}, udp4(60, 1, 1)...)) // a tagged frame
	f.Fuzz(func(t *testing.T, pkt []byte) {
		_ = FlowKey(pkt)
		_ = FrameFlowKey(pkt) // the same bytes as an Ethernet frame (mode l2)
		if p := FramePayload(pkt); p != nil && InnerEtherType(p) == 0 {
			t.Fatalf("FramePayload gave a non-IP packet %x", p)
		}
	})
}

// FuzzGRE checks Validate and the accessors on arbitrary GRE headers.
func FuzzGRE(f *testing.F) {
	f.Add(mustHex("3000080000000007000000014500002000004000401100000a4d00010a4d0002"))
	f.Add(mustHex("b0000800123400000000000700000001"))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := GRE(b)
		if g.Validate() != nil {
			return
		}
		_ = g.Payload()
		if g.HasKey() {
			_ = g.Key()
		}
		if g.HasSeq() {
			_ = g.Seq()
		}
	})
}
