package tunnel

import "fmt"

// Encap names an encapsulation.
type Encap uint8

const (
	EncapGRE  Encap = iota // GRE with key and sequence (RFC 2784/2890)
	EncapIPIP              // IPv4/IPv6 in IPv4 (protocols 4 and 41), no sequence
)

// ParseEncap parses "gre" or "ipip".
func ParseEncap(s string) (Encap, error) {
	switch s {
	case "gre":
		return EncapGRE, nil
	case "ipip":
		return EncapIPIP, nil
	}
	return 0, fmt.Errorf("%q is not an encapsulation (gre | ipip)", s)
}

func (e Encap) String() string {
	if e == EncapIPIP {
		return "ipip"
	}
	return "gre"
}

// Protocols returns the outer IP protocols the encapsulation uses.
func (e Encap) Protocols() []uint8 {
	if e == EncapIPIP {
		return []uint8{ProtoIPIP, ProtoIPv6}
	}
	return []uint8{ProtoGRE}
}

// Headroom is the space every packet buffer keeps in front of the packet,
// enough for the largest header tunbond prepends.
const Headroom = 32

// Codec encapsulates and decapsulates packets of one bond.
type Codec struct {
	Encap    Encap
	Key      uint32
	Checksum bool // GRE checksum on sent packets (always verified when present)
}

// HeaderLen is the tunnel header tunbond writes in front of a data packet
// (the kernel adds the outer IPv4 header).
func (c Codec) HeaderLen() int {
	if c.Encap == EncapIPIP {
		return 0
	}
	return GREFields{Checksum: c.Checksum, HasKey: true, HasSeq: true}.HeaderLen()
}

// Overhead is the bytes added to an inner packet on the wire, outer IPv4 header included.
func (c Codec) Overhead() int { return IPv4HeaderLen + c.HeaderLen() }

// EncapData prepends the tunnel header in place in front of
// buf[off:off+n] and returns the packet to send. off must be ≥ Headroom.
// It returns nil if the payload is not an IP packet.
func (c Codec) EncapData(buf []byte, off, n int, seq uint32) []byte {
	inner := buf[off : off+n]
	if c.Encap == EncapIPIP {
		if InnerIPProto(inner) == 0 {
			return nil
		}
		return inner
	}
	et := InnerEtherType(inner)
	if et == 0 {
		return nil
	}
	f := GREFields{Protocol: et, Checksum: c.Checksum, Key: c.Key, HasKey: true, Seq: seq, HasSeq: true}
	h := f.HeaderLen()
	pkt := buf[off-h : off+n]
	f.Encode(GRE(pkt))
	return pkt
}

// EncapControl writes a control packet at buf[Headroom-header:] and returns
// it: for GRE a header with the key and no sequence, then the inner IPv4
// packet of protocol 253; for IPIP the inner packet alone.
func (c Codec) EncapControl(buf []byte, src, dst [4]byte, f ControlFields) []byte {
	EncodeControlPacket(buf[Headroom:], src, dst, f)
	inner := buf[Headroom : Headroom+ControlPacketLen]
	if c.Encap == EncapIPIP {
		return inner
	}
	g := GREFields{Protocol: EtherTypeIPv4, Checksum: c.Checksum, Key: c.Key, HasKey: true}
	pkt := buf[Headroom-g.HeaderLen() : Headroom+ControlPacketLen]
	g.Encode(GRE(pkt))
	return pkt
}

// Kind says what a decapsulated packet is.
type Kind uint8

const (
	KindData    Kind = iota + 1 // an inner IP packet for the TUN
	KindControl                 // a tunbond control message
)

// Decoded describes a received packet after decapsulation.
type Decoded struct {
	Kind   Kind
	Off    int    // offset of the inner packet (data) or control body in the buffer
	Len    int    // its length
	Seq    uint32 // bond sequence (GRE data)
	HasSeq bool
}

// Decap parses a packet as read from a raw socket (outer IPv4 header
// included) that must come from remote. It returns where the inner packet
// or control message lies in pkt, or why the packet is dropped.
func (c Codec) Decap(pkt []byte, remote [4]byte) (Decoded, error) {
	ip := IPv4(pkt)
	if err := ip.Validate(); err != nil {
		return Decoded{}, err
	}
	if !ip.SrcIs(remote) {
		return Decoded{}, ErrWrongSource
	}
	off := ip.HeaderLen()
	end := ip.TotalLen()
	var d Decoded
	switch proto := ip.Protocol(); {
	case c.Encap == EncapGRE && proto == ProtoGRE:
		g := GRE(pkt[off:end])
		if err := g.Validate(); err != nil {
			return Decoded{}, err
		}
		if !g.HasKey() || g.Key() != c.Key {
			return Decoded{}, ErrWrongKey
		}
		d.HasSeq = g.HasSeq()
		if d.HasSeq {
			d.Seq = g.Seq()
		}
		off += g.HeaderLen()
		if want := InnerEtherType(pkt[off:end]); want == 0 || want != g.Protocol() {
			return Decoded{}, ErrInnerProto
		}
	case c.Encap == EncapIPIP && (proto == ProtoIPIP || proto == ProtoIPv6):
		if InnerIPProto(pkt[off:end]) != proto {
			return Decoded{}, ErrInnerProto
		}
	default:
		return Decoded{}, ErrProtocol
	}
	inner := pkt[off:end]
	if isControlPacket(inner, remote) {
		in := IPv4(inner)
		if in.Validate() != nil || Control(in.Payload()).Validate() != nil {
			return Decoded{}, ErrControl
		}
		return Decoded{Kind: KindControl, Off: off + in.HeaderLen(), Len: ControlLen}, nil
	}
	if c.Encap == EncapGRE && !d.HasSeq {
		return Decoded{}, ErrNoSeq
	}
	d.Kind, d.Off, d.Len = KindData, off, end-off
	return d, nil
}
