package header

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers carried by the tunnels.
const (
	ProtoIPIP    = 4 // IPv4 in IPv4
	ProtoTCP     = 6
	ProtoUDP     = 17
	ProtoSCTP    = 132
	ProtoUDPLite = 136
	ProtoGRE     = 47  // GRE
	ProtoIPv6    = 41  // IPv6 in IPv4
	ProtoControl = 253 // RFC 3692 experimental: tunbond control messages
)

// IPv4HeaderLen is the length of an IPv4 header without options.
const IPv4HeaderLen = 20

// IPv4 is a view of an IPv4 header followed by its payload.
type IPv4 []byte

func (ip IPv4) Version() uint8 { return ip[0] >> 4 }
func (ip IPv4) HeaderLen() int { return int(ip[0]&0x0f) * 4 }
func (ip IPv4) TotalLen() int  { return int(binary.BigEndian.Uint16(ip[2:4])) }

// TOS is the DS field and ECN (byte 1); its top six bits are the DSCP.
func (ip IPv4) TOS() uint8         { return ip[1] }
func (ip IPv4) Flags() uint8       { return ip[6] >> 5 }
func (ip IPv4) DontFragment() bool { return ip[6]&0x40 != 0 }

// FragmentOffset is the fragment offset in 8-byte units (0 for the first fragment or none).
func (ip IPv4) FragmentOffset() uint16 { return binary.BigEndian.Uint16(ip[6:8]) & 0x1fff }

// IsFragment reports a fragment, the first included (MF set or an offset).
func (ip IPv4) IsFragment() bool  { return binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 }
func (ip IPv4) TTL() uint8        { return ip[8] }
func (ip IPv4) Protocol() uint8   { return ip[9] }
func (ip IPv4) Src() netip.Addr   { return netip.AddrFrom4([4]byte(ip[12:16])) }
func (ip IPv4) Dst() netip.Addr   { return netip.AddrFrom4([4]byte(ip[16:20])) }
func (ip IPv4) SrcBytes() [4]byte { return [4]byte(ip[12:16]) }
func (ip IPv4) DstBytes() [4]byte { return [4]byte(ip[16:20]) }
func (ip IPv4) SrcIs(a [4]byte) bool {
	return ip[12] == a[0] && ip[13] == a[1] && ip[14] == a[2] && ip[15] == a[3]
}

// Validate checks that ip holds a whole IPv4 header whose lengths agree with
// the buffer. The total length may be shorter than the buffer (padding).
func (ip IPv4) Validate() error {
	if len(ip) < IPv4HeaderLen {
		return ErrTooShort
	}
	if ip.Version() != 4 {
		return ErrNotIPv4
	}
	hl := ip.HeaderLen()
	if hl < IPv4HeaderLen || hl > len(ip) {
		return ErrTooShort
	}
	if tl := ip.TotalLen(); tl < hl || tl > len(ip) {
		return ErrTooShort
	}
	return nil
}

// Payload returns the bytes after the header, up to the total length.
func (ip IPv4) Payload() []byte { return ip[ip.HeaderLen():ip.TotalLen()] }

// EncodeIPv4 writes a 20-byte IPv4 header (no options, DF clear, ID 0) into
// b, for a packet of totalLen bytes, and fills its checksum.
func EncodeIPv4(b []byte, totalLen int, ttl, proto uint8, src, dst [4]byte) {
	b[0] = 0x45
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:4], uint16(totalLen))
	b[4], b[5], b[6], b[7] = 0, 0, 0, 0
	b[8] = ttl
	b[9] = proto
	b[10], b[11] = 0, 0
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[10:12], ^Checksum(b[:IPv4HeaderLen], 0))
}

// InnerEtherType returns the EtherType for an IP packet from its version
// nibble, or 0 if it is neither IPv4 nor IPv6.
func InnerEtherType(pkt []byte) uint16 {
	if len(pkt) == 0 {
		return 0
	}
	switch pkt[0] >> 4 {
	case 4:
		return EtherTypeIPv4
	case 6:
		return EtherTypeIPv6
	}
	return 0
}

// InnerIPProto returns the outer IP protocol that carries pkt in IPIP mode
// (4 for IPv4, 41 for IPv6), or 0.
func InnerIPProto(pkt []byte) uint8 {
	switch InnerEtherType(pkt) {
	case EtherTypeIPv4:
		return ProtoIPIP
	case EtherTypeIPv6:
		return ProtoIPv6
	}
	return 0
}

// Addrs returns an IPv4 or IPv6 packet's source and destination, and false
// if it is neither or too short to hold them.
func Addrs(p []byte) (src, dst netip.Addr, ok bool) {
	switch InnerEtherType(p) {
	case EtherTypeIPv4:
		if len(p) >= IPv4HeaderLen {
			return IPv4(p).Src(), IPv4(p).Dst(), true
		}
	case EtherTypeIPv6:
		if len(p) >= IPv6HeaderLen {
			return IPv6(p).Src(), IPv6(p).Dst(), true
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}
