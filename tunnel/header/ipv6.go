package header

import (
	"encoding/binary"
	"net/netip"
)

// IPv6HeaderLen is the length of the fixed IPv6 header.
const IPv6HeaderLen = 40

// IPv6 is a view of an IPv6 fixed header followed by its payload.
// Extension headers are not walked: NextHeader is the first one's type.
type IPv6 []byte

func (ip IPv6) Version() uint8  { return ip[0] >> 4 }
func (ip IPv6) PayloadLen() int { return int(binary.BigEndian.Uint16(ip[4:6])) }

// TrafficClass is the DS field and ECN; its top six bits are the DSCP.
func (ip IPv6) TrafficClass() uint8  { return ip[0]<<4 | ip[1]>>4 }
func (ip IPv6) NextHeader() uint8    { return ip[6] }
func (ip IPv6) HopLimit() uint8      { return ip[7] }
func (ip IPv6) Src() netip.Addr      { return netip.AddrFrom16([16]byte(ip[8:24])) }
func (ip IPv6) Dst() netip.Addr      { return netip.AddrFrom16([16]byte(ip[24:40])) }
func (ip IPv6) SrcBytes() [16]byte   { return [16]byte(ip[8:24]) }
func (ip IPv6) AddressBytes() []byte { return ip[8:40] }

// Validate checks that ip holds a whole IPv6 header and the payload its
// length field announces.
func (ip IPv6) Validate() error {
	if len(ip) < IPv6HeaderLen {
		return ErrTooShort
	}
	if ip.Version() != 6 {
		return ErrInnerProto
	}
	if IPv6HeaderLen+ip.PayloadLen() > len(ip) {
		return ErrTooShort
	}
	return nil
}

// Payload returns the bytes after the fixed header, up to the payload length.
func (ip IPv6) Payload() []byte { return ip[IPv6HeaderLen : IPv6HeaderLen+ip.PayloadLen()] }

// IPv6Fields are the values of an IPv6 fixed header (traffic class and flow label 0).
type IPv6Fields struct {
	PayloadLen int
	NextHeader uint8
	HopLimit   uint8
	Src, Dst   [16]byte
}

// Encode writes f into the first IPv6HeaderLen bytes of ip.
func (f IPv6Fields) Encode(ip IPv6) {
	ip[0], ip[1], ip[2], ip[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(ip[4:6], uint16(f.PayloadLen))
	ip[6], ip[7] = f.NextHeader, f.HopLimit
	copy(ip[8:24], f.Src[:])
	copy(ip[24:40], f.Dst[:])
}

// PseudoHeaderSum is the checksum seed of an upper-layer packet of length
// n and protocol proto carried by ip (RFC 8200 §8.1).
func (ip IPv6) PseudoHeaderSum(proto uint8, n int) uint32 {
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	return sum + uint32(n) + uint32(proto)
}
