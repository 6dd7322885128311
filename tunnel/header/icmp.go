package header

import "encoding/binary"

// ICMP protocol numbers and the types tunbond writes.
const (
	ProtoICMP   = 1
	ProtoICMPv6 = 58

	ICMPDestUnreachable    = 3 // code 4: fragmentation needed (RFC 1191)
	ICMPCodeFragNeeded     = 4
	ICMPv6PacketTooBigType = 2 // RFC 4443
)

// ICMPHeaderLen is the length of an ICMP or ICMPv6 header (type, code,
// checksum and the 4-byte rest of header).
const ICMPHeaderLen = 8

// ICMP is a view of an ICMP or ICMPv6 message.
type ICMP []byte

func (m ICMP) Type() uint8      { return m[0] }
func (m ICMP) Code() uint8      { return m[1] }
func (m ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(m[2:4]) }

// RestOfHeader is bytes 4 to 8: the next-hop MTU of a "fragmentation
// needed" in its low 16 bits, the MTU of a "packet too big".
func (m ICMP) RestOfHeader() uint32 { return binary.BigEndian.Uint32(m[4:8]) }

// encode writes type, code and rest of header, copies the quote, and fills
// the checksum seeded with pseudo (0 for ICMP, the pseudo-header for ICMPv6).
func (m ICMP) encode(typ, code uint8, rest uint32, quote []byte, pseudo uint32) {
	m[0], m[1], m[2], m[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(m[4:8], rest)
	copy(m[ICMPHeaderLen:], quote)
	binary.BigEndian.PutUint16(m[2:4], ^Checksum(m, pseudo))
}

// ICMPFragNeeded writes into b an ICMP "destination unreachable,
// fragmentation needed" (type 3, code 4, RFC 1191) from src about the IPv4
// packet orig, with the next-hop MTU, quoting as much of orig as fits in
// 576 bytes (as Linux does). It returns the packet's length; b needs 576 bytes.
func ICMPFragNeeded(b []byte, src [4]byte, orig IPv4, mtu int) int {
	quote := min(len(orig), 576-IPv4HeaderLen-ICMPHeaderLen)
	n := IPv4HeaderLen + ICMPHeaderLen + quote
	EncodeIPv4(b, n, 64, ProtoICMP, src, [4]byte(orig[12:16]))
	ICMP(b[IPv4HeaderLen:n]).encode(ICMPDestUnreachable, ICMPCodeFragNeeded, uint32(uint16(mtu)), orig[:quote], 0)
	return n
}

// ICMPv6PacketTooBig writes into b an ICMPv6 "packet too big" (type 2,
// RFC 4443) from src about the IPv6 packet orig, with the MTU, quoting as
// much of orig as fits in 1280 bytes. It returns the length; b needs 1280.
func ICMPv6PacketTooBig(b []byte, src [16]byte, orig []byte, mtu int) int {
	quote := min(len(orig), 1280-IPv6HeaderLen-ICMPHeaderLen)
	n := IPv6HeaderLen + ICMPHeaderLen + quote
	ip := IPv6(b)
	IPv6Fields{PayloadLen: ICMPHeaderLen + quote, NextHeader: ProtoICMPv6, HopLimit: 64,
		Src: src, Dst: IPv6(orig).SrcBytes()}.Encode(ip) // to the packet's source
	ICMP(b[IPv6HeaderLen:n]).encode(ICMPv6PacketTooBigType, 0, uint32(mtu), orig[:quote],
		ip.PseudoHeaderSum(ProtoICMPv6, ICMPHeaderLen+quote))
	return n
}
