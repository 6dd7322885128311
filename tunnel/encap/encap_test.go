package encap

import (
	"bytes"
	"encoding/hex"
	"errors"
	"github.com/tunbond/tunbond/tunnel/header"
	"testing"
)

// innerV4 is a minimal IPv4/UDP packet 10.77.0.1 → 10.77.0.2 with 4 bytes of payload.
var innerV4 = mustHex("4500002000004000401100000a4d00010a4d00020400050000000c0000616263ff")[:32]

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func withHeadroom(p []byte) ([]byte, int) {
	buf := make([]byte, Headroom+len(p))
	copy(buf[Headroom:], p)
	return buf, Headroom
}

func TestEncapDataGolden(t *testing.T) {
	innerV6 := append(mustHex("6000000000083b40"), make([]byte, 32+8)...)
	tests := []struct {
		name  string
		codec Encapsulation
		inner []byte
		seq   uint32
		want  string // header bytes in front of the inner packet
	}{
		{"gre key seq", GRE{Key: 7}, innerV4, 1, "30000800" + "00000007" + "00000001"},
		{"gre seq wraps", GRE{Key: 0xdeadbeef}, innerV4, 0xffffffff, "30000800" + "deadbeef" + "ffffffff"},
		{"gre ipv6", GRE{Key: 7}, innerV6, 2, "300086dd" + "00000007" + "00000002"},
		{"gre checksum", GRE{Key: 7, Checksum: true}, innerV4, 1, "b0000800" + "????0000" + "00000007" + "00000001"},
		{"ipip", IPIP{}, innerV4, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf, off := withHeadroom(tt.inner)
			pkt := tt.codec.EncapData(buf, off, len(tt.inner), tt.seq)
			hdr := hex.EncodeToString(pkt[:len(pkt)-len(tt.inner)])
			want := tt.want
			if g, ok := tt.codec.(GRE); ok && g.Checksum { // fill the checksum field from what we sent, then verify it
				want = want[:8] + hdr[8:12] + want[12:]
				if header.Checksum(pkt, 0) != 0xffff {
					t.Fatalf("checksum does not verify")
				}
			}
			if hdr != want {
				t.Fatalf("header = %s, want %s", hdr, want)
			}
			if !bytes.Equal(pkt[len(pkt)-len(tt.inner):], tt.inner) {
				t.Fatalf("inner packet changed")
			}
			if tt.codec.HeaderLen() != len(pkt)-len(tt.inner) {
				t.Fatalf("HeaderLen %d, wrote %d", tt.codec.HeaderLen(), len(pkt)-len(tt.inner))
			}
		})
	}
}

func TestGREChecksumGolden(t *testing.T) {
	// RFC 1071 checksum of header+payload, computed independently.
	payload := innerV4
	buf, off := withHeadroom(payload)
	pkt := GRE{Key: 7, Checksum: true}.EncapData(buf, off, len(payload), 1)
	var sum uint32
	hdr := append([]byte{0xb0, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1}, payload...)
	for i := 0; i+1 < len(hdr); i += 2 {
		sum += uint32(hdr[i])<<8 | uint32(hdr[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	want := ^uint16(sum)
	if got := header.GRE(pkt).Checksum(); got != want {
		t.Fatalf("checksum %#04x, want %#04x", got, want)
	}
}

// outerPkt builds an outer IPv4 packet from src with protocol proto around payload.
func outerPkt(src [4]byte, proto uint8, payload []byte) []byte {
	b := make([]byte, header.IPv4HeaderLen+len(payload))
	header.EncodeIPv4(b, len(b), 64, proto, src, [4]byte{192, 0, 2, 1})
	copy(b[header.IPv4HeaderLen:], payload)
	return b
}

func greData(c GRE, seq uint32, inner []byte) []byte {
	buf, off := withHeadroom(inner)
	return c.EncapData(buf, off, len(inner), seq)
}

func TestDecap(t *testing.T) {
	remote := [4]byte{198, 51, 100, 1}
	gre := GRE{Key: 7}
	ipip := IPIP{}
	ctl := make([]byte, 128)
	ctlPkt := gre.EncapControl(ctl, remote, [4]byte{192, 0, 2, 1}, header.ControlFields{Type: header.ControlProbe, ProbeSeq: 9})
	ipipCtl := ipip.EncapControl(make([]byte, 128), remote, [4]byte{192, 0, 2, 1}, header.ControlFields{Type: header.ControlReply})
	badCtl := append([]byte(nil), ctlPkt...)
	badCtl[len(badCtl)-header.ControlLen] ^= 0xff // break the magic

	tests := []struct {
		name    string
		codec   Encapsulation
		pkt     []byte
		err     error
		kind    Kind
		seq     uint32
		innerAt int
	}{
		{"gre data", gre, outerPkt(remote, header.ProtoGRE, greData(gre, 42, innerV4)), nil, KindData, 42, 32},
		{"gre checksum data", gre, outerPkt(remote, header.ProtoGRE, greData(GRE{Key: 7, Checksum: true}, 3, innerV4)), nil, KindData, 3, 36},
		{"gre control", gre, outerPkt(remote, header.ProtoGRE, ctlPkt), nil, KindControl, 0, 20 + 8 + 20},
		{"ipip data", ipip, outerPkt(remote, header.ProtoIPIP, innerV4), nil, KindData, 0, 20},
		{"ipip control", ipip, outerPkt(remote, header.ProtoIPIP, ipipCtl), nil, KindControl, 0, 40},
		{"wrong source", gre, outerPkt([4]byte{1, 2, 3, 4}, header.ProtoGRE, greData(gre, 1, innerV4)), header.ErrWrongSource, 0, 0, 0},
		{"wrong key", gre, outerPkt(remote, header.ProtoGRE, greData(GRE{Key: 8}, 1, innerV4)), header.ErrWrongKey, 0, 0, 0},
		{"no key", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("00000800"), innerV4...)), header.ErrWrongKey, 0, 0, 0},
		{"no seq", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("2000080000000007"), innerV4...)), header.ErrNoSeq, 0, 0, 0},
		{"version 1", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("3001080000000007"), innerV4...)), header.ErrGREVersion, 0, 0, 0},
		{"routing bit", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("7000080000000007"), innerV4...)), header.ErrGREFlags, 0, 0, 0},
		{"bad checksum", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("b0000800123400000000000700000001"), innerV4...)), header.ErrChecksum, 0, 0, 0},
		{"short gre", gre, outerPkt(remote, header.ProtoGRE, mustHex("300008000000")), header.ErrTooShort, 0, 0, 0},
		{"proto mismatch", gre, outerPkt(remote, header.ProtoGRE, append(mustHex("300086dd0000000700000001"), innerV4...)), header.ErrInnerProto, 0, 0, 0},
		{"gre on ipip bond", ipip, outerPkt(remote, header.ProtoGRE, greData(gre, 1, innerV4)), header.ErrProtocol, 0, 0, 0},
		{"ipip v6 in proto 4", ipip, outerPkt(remote, header.ProtoIPIP, mustHex("60000000000000000000")), header.ErrInnerProto, 0, 0, 0},
		{"bad control", gre, outerPkt(remote, header.ProtoGRE, badCtl), header.ErrControl, 0, 0, 0},
		{"not ipv4", gre, mustHex("6000000000000000000000000000000000000000"), header.ErrNotIPv4, 0, 0, 0},
		{"short outer", gre, mustHex("4500"), header.ErrTooShort, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := tt.codec.Decap(tt.pkt, remote)
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if d.Kind != tt.kind || d.Off != tt.innerAt {
				t.Fatalf("kind %d at %d, want %d at %d", d.Kind, d.Off, tt.kind, tt.innerAt)
			}
			if tt.kind == KindData {
				if d.Seq != tt.seq || !bytes.Equal(tt.pkt[d.Off:d.Off+d.Len], innerV4) {
					t.Fatalf("seq %d inner %x", d.Seq, tt.pkt[d.Off:d.Off+d.Len])
				}
			}
		})
	}
}

func TestControlRoundTrip(t *testing.T) {
	f := header.ControlFields{Type: header.ControlReply, ProbeSeq: 77, Watermark: 0xfffffffe, HasWatermark: true, Timestamp: -5, TxPackets: 1 << 40}
	b := make([]byte, header.ControlLen)
	f.Encode(header.Control(b))
	if err := header.Control(b).Validate(); err != nil {
		t.Fatal(err)
	}
	if got := header.Control(b).Fields(); got != f {
		t.Fatalf("got %+v, want %+v", got, f)
	}
	want := "54424e44" + "01" + "02" + "0001" + "0000004d" + "fffffffe" + "fffffffffffffffb" + "0000010000000000"
	if hex.EncodeToString(b) != want {
		t.Fatalf("control bytes\n got %x\nwant %s", b, want)
	}
}

func TestEncapRejectsNonIP(t *testing.T) {
	junk := []byte{0x00, 1, 2, 3}
	for _, c := range []Encapsulation{GRE{}, IPIP{}} {
		buf, off := withHeadroom(junk)
		if c.EncapData(buf, off, len(junk), 0) != nil {
			t.Fatalf("%v encapsulated a non-IP packet", c.Name())
		}
	}
}

// TestDecapControlLen: Decap hands over the whole control message, 48 bytes
// with epochs and 32 from an older peer, and EncapControl sends all of it.
func TestDecapControlLen(t *testing.T) {
	remote, local := [4]byte{198, 51, 100, 1}, [4]byte{192, 0, 2, 1}
	old := header.ControlFields{Type: header.ControlProbe, ProbeSeq: 9, Watermark: 5, HasWatermark: true}
	ep := old
	ep.HasEpochs, ep.Epoch, ep.PeerEpoch = true, 0x0102030405060708, 0x1112131415161718
	for _, c := range []Encapsulation{GRE{Key: 7}, IPIP{}} {
		for _, f := range []header.ControlFields{old, ep} {
			pkt := c.EncapControl(make([]byte, 128), remote, local, f)
			// The inner IPv4 packet's length is that of the message, and the packet ends with it.
			in := header.IPv4(pkt[len(pkt)-header.IPv4HeaderLen-f.Len():])
			if in.TotalLen() != len(in) || header.Control(in[header.IPv4HeaderLen:]).Magic() != header.ControlMagic {
				t.Fatalf("%s: control packet %x does not end with a %d-byte message", c.Name(), pkt, f.Len())
			}
			proto := c.Protocols()[0]
			d, err := c.Decap(outerPkt(remote, proto, pkt), remote)
			if err != nil || d.Kind != KindControl || d.Len != f.Len() {
				t.Fatalf("%s: %+v %v, want a control message of %d bytes", c.Name(), d, err, f.Len())
			}
			o := outerPkt(remote, proto, pkt)
			if got := header.Control(o[d.Off : d.Off+d.Len]).Fields(); got != f {
				t.Fatalf("%s: decoded %+v, want %+v", c.Name(), got, f)
			}
		}
		if c.Name() != "gre" {
			continue
		}
		// The epoch bytes on the wire, after the 32 every tunbond reads.
		pkt := c.EncapControl(make([]byte, 128), remote, local, ep)
		if got := hex.EncodeToString(pkt[len(pkt)-16:]); got != "01020304050607081112131415161718" {
			t.Fatalf("epoch bytes %s", got)
		}
		// Epochs flagged but the packet cut to 32 bytes: refused.
		short := append([]byte(nil), pkt[:len(pkt)-16]...)
		header.EncodeIPv4(short[len(short)-header.IPv4HeaderLen-header.ControlLen:], header.IPv4HeaderLen+header.ControlLen, 1, header.ProtoControl, remote, local)
		if _, err := c.Decap(outerPkt(remote, proto(c), short), remote); !errors.Is(err, header.ErrControl) {
			t.Fatalf("truncated epoch message: %v, want ErrControl", err)
		}
	}
}

func proto(c Encapsulation) uint8 { return c.Protocols()[0] }

// TestFeedbackPacketGolden: a feedback message in GRE, byte for byte: the
// GRE header with the key and no sequence, the inner IPv4 header (protocol
// 253, TTL 1, 100 bytes), and the 80-byte message (docs/wire-format.md).
func TestFeedbackPacketGolden(t *testing.T) {
	src, dst := [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1}
	f := header.FeedbackFields{
		ControlFields: header.ControlFields{ProbeSeq: 3, Watermark: 0x10, HasWatermark: true, Timestamp: 0x0102030405060708,
			TxPackets: 9, Epoch: 0xaaaa, PeerEpoch: 0xbbbb},
		HighestSeq: 0x0a0b0c0d, ReceivedAt: 0x1112131415161718, DeliveredBytes: 0x2000, DeliveredPackets: 0x30,
	}
	buf := make([]byte, Headroom+header.FeedbackPacketLen)
	header.EncodeFeedbackPacket(buf[Headroom:], src, dst, f)
	pkt := GRE{Key: 7}.WrapControl(buf, header.FeedbackPacketLen)
	want := "20000800" + "00000007" + // GRE: K, protocol IPv4; key 7
		"45000064000000000" + "1fd" + "cc67" + "c0000201c6336401" + // IPv4: 100 bytes, TTL 1, protocol 253, checksum
		"54424e44" + "01" + "03" + "0003" + // magic, version 1, type 3 (feedback), flags watermark|epochs
		"00000003" + "00000010" + "0102030405060708" + "0000000000000009" + // feedback seq, watermark, timestamp, tx packets
		"000000000000aaaa" + "000000000000bbbb" + // epoch, peer epoch
		"0a0b0c0d" + "00000000" + "1112131415161718" + // highest sequence, reserved, received at
		"0000000000002000" + "0000000000000030" // bytes, packets
	if got := hex.EncodeToString(pkt); got != want {
		t.Fatalf("feedback packet\n got %s\nwant %s", got, want)
	}
	d, err := GRE{Key: 7}.Decap(outerPkt(dst, header.ProtoGRE, pkt), dst)
	if err == nil {
		t.Fatalf("decapsulated from the wrong source: %+v", d)
	}
	d, err = GRE{Key: 7}.Decap(outerPkt(src, header.ProtoGRE, pkt), src)
	o := outerPkt(src, header.ProtoGRE, pkt)
	if err != nil || d.Kind != KindControl || d.Len != header.FeedbackLen {
		t.Fatalf("%+v %v", d, err)
	}
	if got := header.Feedback(o[d.Off : d.Off+d.Len]).Fields(); got.HighestSeq != f.HighestSeq || got.DeliveredPackets != 0x30 || got.Epoch != 0xaaaa {
		t.Fatalf("decoded %+v", got)
	}
}

// TestGREInUDPGolden: a GRE-in-UDP datagram's payload (RFC 8086) is the GRE
// packet from its first byte: DecapPayload finds the inner packet behind
// the 12-byte header; a sealed packet's GRE header (SealedHeader) has
// protocol 0x88b5, the key, the sequence for data and none for control;
// it comes back whole as KindSealed.
func TestGREInUDPGolden(t *testing.T) {
	g := GRE{Key: 7}
	payload := mustHex("30000800" + "00000007" + "00000001" + hex.EncodeToString(innerV4))
	d, err := g.DecapPayload(payload, [4]byte{198, 51, 100, 1})
	if err != nil || d.Kind != KindData || d.Off != 12 || d.Len != len(innerV4) || d.Seq != 1 {
		t.Fatalf("DecapPayload = %+v, %v", d, err)
	}
	for _, tt := range []struct {
		name   string
		seq    uint32
		hasSeq bool
		want   string
	}{
		{"data", 9, true, "300088b5" + "00000007" + "00000009"},
		{"control", 0, false, "200088b5" + "00000007"},
	} {
		buf := make([]byte, 64)
		n := g.SealedHeader(buf, 32, tt.seq, tt.hasSeq)
		if got := hex.EncodeToString(buf[32-n : 32]); got != tt.want {
			t.Errorf("%s: sealed GRE header %s, want %s", tt.name, got, tt.want)
		}
		pkt := append(buf[32-n:32], make([]byte, header.SealedOverhead)...)
		d, err := g.DecapPayload(pkt, [4]byte{})
		if err != nil || d.Kind != KindSealed || d.Off != 0 || d.Hdr != n || d.Len != len(pkt) || d.HasSeq != tt.hasSeq {
			t.Errorf("%s: DecapPayload = %+v, %v; want it whole, KindSealed", tt.name, d, err)
		}
	}
	if _, err := g.DecapPayload(mustHex("300088b5"+"00000008"+"00000009"), [4]byte{}); !errors.Is(err, header.ErrWrongKey) {
		t.Errorf("a sealed packet with another key: %v, want wrong key", err)
	}
}

// TestTEBGolden: in mode l2 a whole Ethernet frame (here ARP, and an IPv4
// frame under an 802.1Q tag) goes in GRE with key, sequence and protocol
// type 0x6558, as Linux gretap sends it; Decap hands the frame back whole.
// An IP packet in an l2 bond and a frame in an l3 bond are refused.
func TestTEBGolden(t *testing.T) {
	g := GRE{Key: 7, Frames: true}
	arp := mustHex("ffffffffffff" + "020000000001" + "0806" + "0001080006040001" + "020000000001" + "0a320001" + "000000000000" + "0a320002")
	tagged := mustHex("020000000002" + "020000000001" + "8100" + "0064" + "0800" + hex.EncodeToString(innerV4))
	for _, tt := range []struct {
		name  string
		frame []byte
	}{{"arp", arp}, {"vlan-tagged ipv4", tagged}} {
		buf, off := withHeadroom(tt.frame)
		pkt := g.EncapData(buf, off, len(tt.frame), 5)
		if got, want := hex.EncodeToString(pkt[:12]), "30006558"+"00000007"+"00000005"; got != want {
			t.Fatalf("%s: GRE header %s, want %s", tt.name, got, want)
		}
		outer := outerPkt([4]byte{198, 51, 100, 1}, header.ProtoGRE, pkt)
		d, err := g.Decap(outer, [4]byte{198, 51, 100, 1})
		if err != nil || d.Kind != KindData || d.Seq != 5 || !bytes.Equal(outer[d.Off:d.Off+d.Len], tt.frame) {
			t.Fatalf("%s: Decap = %+v, %v", tt.name, d, err)
		}
		if _, err := (GRE{Key: 7}).Decap(outer, [4]byte{198, 51, 100, 1}); !errors.Is(err, header.ErrInnerProto) {
			t.Errorf("%s: an l3 bond took a frame: %v", tt.name, err)
		}
	}
	ipBuf, off := withHeadroom(innerV4)
	ipPkt := GRE{Key: 7}.EncapData(ipBuf, off, len(innerV4), 1)
	if _, err := g.Decap(outerPkt([4]byte{198, 51, 100, 1}, header.ProtoGRE, ipPkt), [4]byte{198, 51, 100, 1}); !errors.Is(err, header.ErrInnerProto) {
		t.Errorf("an l2 bond took an IP packet: %v", err)
	}
	short, off := withHeadroom(make([]byte, 13))
	if g.EncapData(short, off, 13, 1) != nil {
		t.Error("a 13-byte frame was encapsulated")
	}
}
