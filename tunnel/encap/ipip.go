package encap

import "github.com/tunbond/tunbond/tunnel/header"

// IPIP is IPv4 in IPv4 (protocol 4, RFC 2003) and IPv6 in IPv4 (protocol
// 41), as the kernel's ipip and sit devices and IPVS-TUN send it: no tunnel
// header and no sequence.
type IPIP struct{}

func (IPIP) Name() string       { return "ipip" }
func (IPIP) Protocols() []uint8 { return []uint8{header.ProtoIPIP, header.ProtoIPv6} }
func (IPIP) Sequenced() bool    { return false }
func (IPIP) HeaderLen() int     { return 0 }
func (IPIP) Overhead() int      { return header.IPv4HeaderLen }

func (IPIP) EncapData(buf []byte, off, n int, _ uint32) []byte {
	inner := buf[off : off+n]
	if header.InnerIPProto(inner) == 0 {
		return nil
	}
	return inner
}

func (i IPIP) EncapControl(buf []byte, src, dst [4]byte, f header.ControlFields) []byte {
	header.EncodeControlPacket(buf[Headroom:], src, dst, f)
	return i.WrapControl(buf, header.IPv4HeaderLen+f.Len())
}

func (IPIP) WrapControl(buf []byte, n int) []byte { return buf[Headroom : Headroom+n] }

func (IPIP) Decap(pkt []byte, remote [4]byte) (Decoded, error) {
	proto, off, end, err := outer(pkt, remote)
	if err != nil {
		return Decoded{}, err
	}
	if proto != header.ProtoIPIP && proto != header.ProtoIPv6 {
		return Decoded{}, header.ErrProtocol
	}
	if header.InnerIPProto(pkt[off:end]) != proto {
		return Decoded{}, header.ErrInnerProto
	}
	if c, ok, err := control(pkt, off, end, remote); ok {
		return c, err
	}
	return Decoded{Kind: KindData, Off: off, Len: end - off}, nil
}
