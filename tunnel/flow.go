package tunnel

import (
	"encoding/binary"
	"net/netip"
)

// Flow is what a director reads of a client's packet.
type Flow struct {
	Proto            uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16 // 0 for protocols without ports, and for fragments after the first
	TCPFlags         uint8
	DontFragment     bool // IPv4 DF (IPv6 never fragments on the way)
}

// ParseFlow reads the addresses, protocol, ports and TCP flags of an IPv4
// or IPv6 packet. It fails on packets too short for what they claim.
func ParseFlow(pkt []byte) (Flow, error) {
	var f Flow
	if len(pkt) < 1 {
		return f, ErrTooShort
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		ip := IPv4(pkt)
		if err := ip.Validate(); err != nil {
			return f, err
		}
		f.Proto, f.Src, f.Dst, f.DontFragment = ip.Protocol(), ip.Src(), ip.Dst(), ip.DontFragment()
		if binary.BigEndian.Uint16(pkt[6:8])&0x1fff == 0 { // first fragment (or none): ports present
			l4 = ip.Payload()
		}
	case 6:
		if len(pkt) < 40 {
			return f, ErrTooShort
		}
		f.Proto = pkt[6]
		f.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		end := 40 + int(binary.BigEndian.Uint16(pkt[4:6]))
		if end > len(pkt) {
			return f, ErrTooShort
		}
		l4 = pkt[40:end]
	default:
		return f, ErrInnerProto
	}
	switch f.Proto {
	case 6:
		if l4 != nil {
			if len(l4) < 20 {
				return f, ErrTooShort
			}
			f.TCPFlags = l4[13]
		}
		fallthrough
	case 17, 132:
		if l4 != nil {
			if len(l4) < 4 {
				return f, ErrTooShort
			}
			f.SrcPort, f.DstPort = binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		}
	}
	return f, nil
}

// ICMPFragNeeded writes into b an ICMP "destination unreachable,
// fragmentation needed" (type 3, code 4, RFC 1191) from src about the IPv4
// packet orig, with the next-hop MTU, quoting as much of orig as fits in
// 576 bytes (as Linux does). It returns the packet's length; b needs 576 bytes.
func ICMPFragNeeded(b []byte, src [4]byte, orig IPv4, mtu int) int {
	quote := min(len(orig), 576-IPv4HeaderLen-8)
	n := IPv4HeaderLen + 8 + quote
	EncodeIPv4(b, n, 64, 1, src, [4]byte(orig[12:16]))
	icmp := b[IPv4HeaderLen:n]
	icmp[0], icmp[1] = 3, 4
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[4:6], 0)
	binary.BigEndian.PutUint16(icmp[6:8], uint16(mtu))
	copy(icmp[8:], orig[:quote])
	binary.BigEndian.PutUint16(icmp[2:4], ^Checksum(icmp, 0))
	return n
}

// ICMPv6PacketTooBig writes into b an ICMPv6 "packet too big" (type 2,
// RFC 4443) from src about the IPv6 packet orig, with the MTU, quoting as
// much of orig as fits in 1280 bytes. It returns the length; b needs 1280.
func ICMPv6PacketTooBig(b []byte, src [16]byte, orig []byte, mtu int) int {
	quote := min(len(orig), 1280-40-8)
	n := 40 + 8 + quote
	b[0], b[1], b[2], b[3] = 0x60, 0, 0, 0
	binary.BigEndian.PutUint16(b[4:6], uint16(8+quote))
	b[6], b[7] = 58, 64 // ICMPv6, hop limit
	copy(b[8:24], src[:])
	copy(b[24:40], orig[8:24]) // to the packet's source
	icmp := b[40:n]
	icmp[0], icmp[1], icmp[2], icmp[3] = 2, 0, 0, 0
	binary.BigEndian.PutUint32(icmp[4:8], uint32(mtu))
	copy(icmp[8:], orig[:quote])
	// Pseudo-header: source, destination, upper-layer length, next header.
	var sum uint32
	for i := 8; i < 40; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	sum += uint32(len(icmp)) + 58
	binary.BigEndian.PutUint16(icmp[2:4], ^Checksum(icmp, sum))
	return n
}
