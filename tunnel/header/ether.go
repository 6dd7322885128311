package header

// EtherType values carried in GRE's protocol type field and Ethernet frames.
const (
	EtherTypeIPv4 uint16 = 0x0800
	EtherTypeARP  uint16 = 0x0806
	EtherTypeVLAN uint16 = 0x8100 // IEEE 802.1Q tag
	EtherTypeIPv6 uint16 = 0x86DD
	EtherTypeTEB  uint16 = 0x6558 // Transparent Ethernet Bridging (gretap)
)

// EtherTypeQinQ is the IEEE 802.1ad service tag.
const EtherTypeQinQ uint16 = 0x88A8

// EthernetHeaderLen is an Ethernet II header: destination, source, type.
const EthernetHeaderLen = 14

// Ethernet is a view of an Ethernet II frame; valid once Validate has
// returned nil.
type Ethernet []byte

func (e Ethernet) Dst() []byte  { return e[0:6] }
func (e Ethernet) Src() []byte  { return e[6:12] }
func (e Ethernet) Type() uint16 { return uint16(e[12])<<8 | uint16(e[13]) }

// Validate checks that e holds an Ethernet header.
func (e Ethernet) Validate() error {
	if len(e) < EthernetHeaderLen {
		return ErrTooShort
	}
	return nil
}

// FrameType returns an Ethernet frame's type under up to two VLAN tags
// (802.1Q, 802.1ad) and where its payload starts, or 0 for a frame too
// short to say or with more tags.
func FrameType(f []byte) (uint16, int) {
	if len(f) < EthernetHeaderLen {
		return 0, 0
	}
	off := 12
	for tags := 0; ; tags++ {
		if len(f) < off+2 {
			return 0, 0
		}
		t := uint16(f[off])<<8 | uint16(f[off+1])
		if t != EtherTypeVLAN && t != EtherTypeQinQ {
			return t, off + 2
		}
		if tags == 2 {
			return 0, 0
		}
		off += 4 // the tag's type and TCI: the next type follows
	}
}

// FramePayload returns the IPv4 or IPv6 packet an Ethernet frame carries,
// under up to two VLAN tags, or nil for any other frame (ARP, say) or one
// too short to say.
func FramePayload(f []byte) []byte {
	t, off := FrameType(f)
	if t != EtherTypeIPv4 && t != EtherTypeIPv6 {
		return nil
	}
	if p := f[off:]; InnerEtherType(p) == t {
		return p
	}
	return nil
}

// FrameFlowKey is the flow of an Ethernet frame: FlowKey of the IP packet
// it carries (under VLAN tags too), else a hash of its MAC pair and type,
// so the frames between two stations stay together.
func FrameFlowKey(f []byte) uint64 {
	if p := FramePayload(f); p != nil {
		return FlowKey(p)
	}
	if len(f) < EthernetHeaderLen {
		return 0
	}
	h := Mix64(0xcbf29ce484222325 ^ mac48(f[0:6]))
	h = Mix64(h ^ mac48(f[6:12]))
	return Mix64(h ^ uint64(Ethernet(f).Type()))
}

// mac48 is a MAC address as a number.
func mac48(b []byte) uint64 {
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}
