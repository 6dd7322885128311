package header

import (
	"encoding/hex"
	"errors"
	"net/netip"
	"testing"
)

// tcpSYN is IPv4 198.51.100.7:40000 → 192.0.2.10:80, SYN, DF, 40 bytes.
var tcpSYN = mustHex("450000280000400040060000c6336407c000020a" + "9c400050000000000000000050022000" + "00000000")

func TestParseFlow(t *testing.T) {
	udp6 := mustHex("60000000000c1140" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "d43100350000000000000000")
	frag := append([]byte(nil), tcpSYN...)
	frag[6], frag[7] = 0x00, 0x10 // a later fragment: no ports
	tests := []struct {
		name string
		pkt  []byte
		want Flow
		err  error
	}{
		{"tcp syn", tcpSYN, Flow{Proto: 6, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("192.0.2.10"),
			SrcPort: 40000, DstPort: 80, TCPFlags: 0x02, DontFragment: true}, nil},
		{"udp6", udp6, Flow{Proto: 17, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8::2"),
			SrcPort: 54321, DstPort: 53}, nil},
		{"later fragment", frag, Flow{Proto: 6, Src: netip.MustParseAddr("198.51.100.7"), Dst: netip.MustParseAddr("192.0.2.10")}, nil},
		{"truncated tcp", tcpSYN[:30], Flow{}, ErrTooShort},
		{"not ip", []byte{0x10, 0, 0, 0}, Flow{}, ErrInnerProto},
		{"empty", nil, Flow{}, ErrTooShort},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt
			if tt.name == "truncated tcp" {
				pkt = append([]byte(nil), tcpSYN[:30]...)
				pkt[2], pkt[3] = 0, 30
			}
			got, err := ParseFlow(pkt)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestICMPFragNeededGolden(t *testing.T) {
	b := make([]byte, 576)
	n := ICMPFragNeeded(b, [4]byte{192, 0, 2, 10}, IPv4(tcpSYN), 1480)
	if n != 20+8+40 {
		t.Fatalf("length %d", n)
	}
	got := hex.EncodeToString(b[:n])
	// IPv4 header VIP → client, ICMP 3/4, next-hop MTU 1480 (0x05c8), then the quote.
	wantHead := "45000044000000004001" // then checksum
	if got[:20] != wantHead || got[24:40] != "c000020ac6336407" {
		t.Fatalf("IPv4 header %s", got[:40])
	}
	if got[40:44] != "0304" || got[48:56] != "000005c8" || got[56:] != hex.EncodeToString(tcpSYN) {
		t.Fatalf("ICMP %s", got[40:])
	}
	if Checksum(b[20:n], 0) != 0xffff || Checksum(b[:20], 0) != 0xffff {
		t.Fatal("checksums do not verify")
	}
	// A long packet is quoted up to 576 bytes in all.
	long := make([]byte, 1500)
	copy(long, tcpSYN)
	long[2], long[3] = 0x05, 0xdc
	if n := ICMPFragNeeded(b, [4]byte{192, 0, 2, 10}, IPv4(long), 1480); n != 576 {
		t.Fatalf("long quote %d bytes", n)
	}
}

func FuzzParseFlow(f *testing.F) {
	f.Add(tcpSYN)
	f.Add(mustHex("60000000000c1140" + "20010db8000000000000000000000001" + "20010db8000000000000000000000002" + "d43100350000000000000000"))
	f.Fuzz(func(t *testing.T, pkt []byte) { _, _ = ParseFlow(pkt) })
}

func TestICMPv6PacketTooBig(t *testing.T) {
	orig := make([]byte, 1500)
	copy(orig, mustHex("6000000005b00640"+"20010db8000000000000000000000001"+"20010db8000000000000000000000002"))
	b := make([]byte, 1280)
	src := netip.MustParseAddr("2001:db8::2").As16()
	n := ICMPv6PacketTooBig(b, src, orig, 1480)
	if n != 1280 {
		t.Fatalf("length %d, want 1280", n)
	}
	if b[6] != 58 || b[40] != 2 || b[41] != 0 || hex.EncodeToString(b[44:48]) != "000005c8" {
		t.Fatalf("header %x icmp %x", b[:8], b[40:48])
	}
	if netip.AddrFrom16([16]byte(b[24:40])).String() != "2001:db8::1" {
		t.Fatal("not addressed to the original source")
	}
	// Verify the checksum over the pseudo-header independently.
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	sum += uint32(n-40) + 58
	for i := 40; i+1 < n; i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		t.Fatalf("checksum does not verify: %#x", sum)
	}
}

// TestFrameFlowKey: a frame's flow is its IP packet's, under one or two
// VLAN tags too; a frame without IP (ARP) has the flow of its MAC pair and
// type; a truncated tag says nothing.
func TestFrameFlowKey(t *testing.T) {
	ip := append([]byte(nil), tcpSYN...)
	eth := func(types ...uint16) []byte {
		f := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1}
		for i, ty := range types {
			f = append(f, byte(ty>>8), byte(ty))
			if i < len(types)-1 {
				f = append(f, 0, 100) // the tag's TCI
			}
		}
		return f
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		ip    bool
	}{
		{"untagged", append(eth(EtherTypeIPv4), ip...), true},
		{"802.1Q", append(eth(EtherTypeVLAN, EtherTypeIPv4), ip...), true},
		{"QinQ", append(eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeIPv4), ip...), true},
		{"three tags", append(eth(EtherTypeQinQ, EtherTypeVLAN, EtherTypeVLAN, EtherTypeIPv4), ip...), false},
		{"type says IPv4, payload is not", append(eth(EtherTypeIPv4), 0x60, 0, 0), false},
		{"arp", append(eth(EtherTypeARP), make([]byte, 28)...), false},
	} {
		p := FramePayload(tt.frame)
		if (p != nil) != tt.ip {
			t.Fatalf("%s: FramePayload = %x, want IP %v", tt.name, p, tt.ip)
		}
		if tt.ip && FrameFlowKey(tt.frame) != FlowKey(ip) {
			t.Errorf("%s: the frame's flow is not its IP packet's", tt.name)
		}
		if !tt.ip && FrameFlowKey(tt.frame) == 0 {
			t.Errorf("%s: no flow for a frame without IP", tt.name)
		}
	}
	arp := append(eth(EtherTypeARP), make([]byte, 28)...)
	other := append([]byte(nil), arp...)
	other[11] = 9 // another source MAC
	if FrameFlowKey(arp) == FrameFlowKey(other) {
		t.Error("two MAC pairs have one flow")
	}
	if FramePayload(eth(EtherTypeVLAN)[:14]) != nil || FrameFlowKey(make([]byte, 13)) != 0 {
		t.Error("a truncated frame gave a flow")
	}
}

// TestAddrs: an IPv4 and an IPv6 packet's addresses; nothing of a short or
// non-IP one.
func TestAddrs(t *testing.T) {
	if s, d, ok := Addrs(tcpSYN); !ok || s != netip.MustParseAddr("198.51.100.7") || d != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("IPv4: %v %v %v", s, d, ok)
	}
	if s, d, ok := Addrs(udp6); !ok || s != netip.MustParseAddr("2001:db8::1") || d != netip.MustParseAddr("2001:db8::2") {
		t.Errorf("IPv6: %v %v %v", s, d, ok)
	}
	for _, p := range [][]byte{tcpSYN[:19], udp6[:39], {0x10, 0, 0, 0}, nil} {
		if _, _, ok := Addrs(p); ok {
			t.Errorf("addresses from %x", p)
		}
	}
}
