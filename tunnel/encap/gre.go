package encap

import "github.com/tunbond/tunbond/tunnel/header"

// GRE is GRE with key and bond sequence (RFC 2784/2890), protocol 47.
type GRE struct {
	Key      uint32
	Checksum bool // GRE checksum on sent packets (always verified when present)
	// Frames: the payloads are whole Ethernet frames, GRE protocol type
	// 0x6558 (Transparent Ethernet Bridging, as Linux gretap sends them),
	// not IP packets (mode: l2).
	Frames bool
}

func (GRE) Name() string       { return "gre" }
func (GRE) Protocols() []uint8 { return []uint8{header.ProtoGRE} }
func (GRE) Sequenced() bool    { return true }

func (g GRE) HeaderLen() int {
	return header.GREFields{Checksum: g.Checksum, HasKey: true, HasSeq: true}.HeaderLen()
}

func (g GRE) Overhead() int { return header.IPv4HeaderLen + g.HeaderLen() }

func (g GRE) EncapData(buf []byte, off, n int, seq uint32) []byte {
	et := g.PayloadType(buf[off : off+n])
	if et == 0 {
		return nil
	}
	f := header.GREFields{Protocol: et, Checksum: g.Checksum, Key: g.Key, HasKey: true, Seq: seq, HasSeq: true}
	pkt := buf[off-f.HeaderLen() : off+n]
	f.Encode(header.GRE(pkt))
	return pkt
}

// EncapControl writes a GRE header with the key and no sequence, then the
// inner IPv4 packet of protocol 253.
func (g GRE) EncapControl(buf []byte, src, dst [4]byte, f header.ControlFields) []byte {
	header.EncodeControlPacket(buf[Headroom:], src, dst, f)
	return g.WrapControl(buf, header.IPv4HeaderLen+f.Len())
}

func (g GRE) WrapControl(buf []byte, n int) []byte {
	gf := header.GREFields{Protocol: header.EtherTypeIPv4, Checksum: g.Checksum, Key: g.Key, HasKey: true}
	pkt := buf[Headroom-gf.HeaderLen() : Headroom+n]
	gf.Encode(header.GRE(pkt))
	return pkt
}

func (g GRE) Decap(pkt []byte, remote [4]byte) (Decoded, error) {
	proto, off, end, err := outer(pkt, remote)
	if err != nil {
		return Decoded{}, err
	}
	if proto != header.ProtoGRE {
		return Decoded{}, header.ErrProtocol
	}
	return g.decapGRE(pkt, off, end, remote)
}

// DecapPayload parses a GRE packet with no outer header: the payload of a
// UDP datagram (GRE-in-UDP, RFC 8086), whose sender the socket checked.
// remote is the peer's address the inner control packets of an
// unauthenticated bond come from.
func (g GRE) DecapPayload(pkt []byte, remote [4]byte) (Decoded, error) {
	return g.decapGRE(pkt, 0, len(pkt), remote)
}

// decapGRE parses the GRE packet at pkt[off:end]. A sealed one (protocol
// header.EtherTypeSealed) is returned whole as KindSealed, for the
// session to open.
func (g GRE) decapGRE(pkt []byte, off, end int, remote [4]byte) (Decoded, error) {
	gh := header.GRE(pkt[off:end])
	if err := gh.Validate(); err != nil {
		return Decoded{}, err
	}
	if !gh.HasKey() || gh.Key() != g.Key {
		return Decoded{}, header.ErrWrongKey
	}
	var d Decoded
	if d.HasSeq = gh.HasSeq(); d.HasSeq {
		d.Seq = gh.Seq()
	}
	if gh.Protocol() == header.EtherTypeSealed {
		if gh.HasChecksum() {
			return Decoded{}, header.ErrInnerProto // a sealed packet has no checksum (the tag covers it)
		}
		d.Kind, d.Off, d.Len, d.Hdr = KindSealed, off, end-off, gh.HeaderLen()
		return d, nil
	}
	off += gh.HeaderLen()
	if g.Frames && gh.Protocol() == header.EtherTypeTEB {
		if !d.HasSeq {
			return Decoded{}, header.ErrNoSeq
		}
		if end-off < header.EthernetHeaderLen {
			return Decoded{}, header.ErrTooShort
		}
		d.Kind, d.Off, d.Len = KindData, off, end-off
		return d, nil
	}
	if want := header.InnerEtherType(pkt[off:end]); want == 0 || want != gh.Protocol() {
		return Decoded{}, header.ErrInnerProto
	}
	if c, ok, err := control(pkt, off, end, remote); ok {
		return c, err
	}
	if g.Frames {
		return Decoded{}, header.ErrInnerProto // an IP packet in an l2 bond
	}
	if !d.HasSeq {
		return Decoded{}, header.ErrNoSeq
	}
	d.Kind, d.Off, d.Len = KindData, off, end-off
	return d, nil
}

// SealedHeader writes, in front of buf[off:], the GRE header of a sealed
// packet (docs/wire-format.md, "Sealed packets"): the key, the bond
// sequence when hasSeq (data), protocol header.EtherTypeSealed and never a
// checksum. off is where the sealed header goes; it returns the GRE
// header's length.
func (g GRE) SealedHeader(buf []byte, off int, seq uint32, hasSeq bool) int {
	f := header.GREFields{Protocol: header.EtherTypeSealed, Key: g.Key, HasKey: true, Seq: seq, HasSeq: hasSeq}
	n := f.HeaderLen()
	f.Encode(header.GRE(buf[off-n : off]))
	return n
}

// PayloadType is the GRE protocol type of a payload: 0x6558 for an
// Ethernet frame (Frames; 0 if it is shorter than an Ethernet header),
// else the IP version's EtherType (0 if it is not IP).
func (g GRE) PayloadType(p []byte) uint16 {
	if g.Frames {
		if len(p) < header.EthernetHeaderLen {
			return 0
		}
		return header.EtherTypeTEB
	}
	return header.InnerEtherType(p)
}
