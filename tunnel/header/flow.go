package header

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
		if ip.FragmentOffset() == 0 { // first fragment (or none): ports present
			l4 = ip.Payload()
		}
	case 6:
		ip := IPv6(pkt)
		if err := ip.Validate(); err != nil {
			return f, err
		}
		f.Proto, f.Src, f.Dst = ip.NextHeader(), ip.Src(), ip.Dst()
		l4 = ip.Payload()
	default:
		return f, ErrInnerProto
	}
	if l4 == nil {
		return f, nil
	}
	switch f.Proto {
	case ProtoTCP:
		if len(l4) < TCPMinHeaderLen {
			return f, ErrTooShort
		}
		f.TCPFlags = TCP(l4).Flags()
		f.SrcPort, f.DstPort = Ports(l4)
	case ProtoUDP, ProtoSCTP:
		if len(l4) < 4 {
			return f, ErrTooShort
		}
		f.SrcPort, f.DstPort = Ports(l4)
	}
	return f, nil
}

// FlowKey hashes an IP packet's flow: addresses, protocol and, for TCP, UDP,
// SCTP and UDP-Lite on an unfragmented packet, the ports. It never fails:
// what is not an IP packet hashes to 0.
func FlowKey(pkt []byte) uint64 {
	if len(pkt) < 1 {
		return 0
	}
	var h uint64 = 0xcbf29ce484222325
	var proto uint8
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < IPv4HeaderLen {
			return 0
		}
		ip := IPv4(pkt)
		ihl := ip.HeaderLen()
		proto = ip.Protocol()
		h = Mix64(h ^ binary.BigEndian.Uint64(ip[12:20])) // source and destination
		if !ip.IsFragment() && ihl >= IPv4HeaderLen && len(pkt) >= ihl+4 {
			l4 = pkt[ihl:]
		}
	case 6:
		if len(pkt) < IPv6HeaderLen {
			return 0
		}
		ip := IPv6(pkt)
		proto = ip.NextHeader()
		addrs := ip.AddressBytes()
		for o := 0; o < 32; o += 8 {
			h = Mix64(h ^ binary.BigEndian.Uint64(addrs[o:]))
		}
		if len(pkt) >= IPv6HeaderLen+4 {
			l4 = pkt[IPv6HeaderLen:]
		}
	default:
		return 0
	}
	h = Mix64(h ^ uint64(proto))
	switch proto {
	case ProtoTCP, ProtoUDP, ProtoSCTP, ProtoUDPLite:
		if l4 != nil {
			h = Mix64(h ^ uint64(binary.BigEndian.Uint32(l4)))
		}
	}
	return h
}

// Mix64 is the splitmix64 finaliser: the flow hash schedulers mix with it.
func Mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
