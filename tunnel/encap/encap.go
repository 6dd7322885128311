// Package encap holds tunbond's encapsulations behind one interface: each
// writes its tunnel header in place into the headroom in front of an inner
// packet, and finds the inner packet (or a control message) in a received
// one without copying. Encapsulations know nothing of sockets: a transport
// (tunnel/conn) adds and strips the outer IP header.
package encap

import (
	"fmt"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Headroom is the space every packet buffer keeps in front of the packet,
// enough for the largest header tunbond prepends.
const Headroom = 32

// Encapsulation writes and reads one tunnel format.
type Encapsulation interface {
	// Name is the config value that selects it ("gre", "ipip").
	Name() string
	// Protocols are the outer IP protocols it is carried in.
	Protocols() []uint8
	// HeaderLen is the tunnel header written in front of a data packet
	// (the transport adds the outer IPv4 header).
	HeaderLen() int
	// Overhead is the bytes added to an inner packet on the wire, outer IPv4 header included.
	Overhead() int
	// Sequenced reports whether data packets carry a bond sequence (and so
	// can be reordered at the receiver).
	Sequenced() bool
	// EncapData prepends the tunnel header in place in front of
	// buf[off:off+n] and returns the packet to send. off must be ≥ Headroom.
	// It returns nil if the payload is not an IP packet.
	EncapData(buf []byte, off, n int, seq uint32) []byte
	// EncapControl writes a control packet (inner IPv4, protocol 253, with
	// the f.Len() bytes of the message) at buf[Headroom-HeaderLen():] and
	// returns it.
	EncapControl(buf []byte, src, dst [4]byte, f header.ControlFields) []byte
	// WrapControl puts the tunnel header in front of an inner control
	// packet of n bytes the caller wrote at buf[Headroom:] (a feedback
	// message: header.EncodeFeedbackPacket) and returns the packet to send.
	WrapControl(buf []byte, n int) []byte
	// Decap parses a packet as read from a raw socket (outer IPv4 header
	// included) that must come from remote. It returns where the inner
	// packet or control message lies in pkt, or why the packet is dropped
	// (a header.DecodeError).
	Decap(pkt []byte, remote [4]byte) (Decoded, error)
}

// Names lists the encapsulations Parse accepts.
var Names = []string{"gre", "ipip"}

// Parse returns the encapsulation called name; key and checksum are GRE's.
func Parse(name string, key uint32, checksum bool) (Encapsulation, error) {
	switch name {
	case "gre":
		return GRE{Key: key, Checksum: checksum}, nil
	case "ipip":
		return IPIP{}, nil
	}
	return nil, fmt.Errorf("%q is not an encapsulation (gre | ipip)", name)
}

// Kind says what a decapsulated packet is.
type Kind uint8

const (
	KindData    Kind = iota + 1 // an inner IP packet for the TUN
	KindControl                 // a tunbond control message
	KindSealed                  // a sealed packet (auth): Off is its GRE header, Hdr that header's length
)

// Decoded describes a received packet after decapsulation.
type Decoded struct {
	Kind   Kind
	Off    int    // offset of the inner packet (data) or control body in the buffer
	Len    int    // its length
	Seq    uint32 // bond sequence (GRE data)
	HasSeq bool
	Hdr    int // KindSealed: the GRE header's length
}

// outer validates the outer IPv4 header of a received packet and its
// source, and returns the protocol and the payload's bounds.
func outer(pkt []byte, remote [4]byte) (proto uint8, off, end int, err error) {
	ip := header.IPv4(pkt)
	if err := ip.Validate(); err != nil {
		return 0, 0, 0, err
	}
	if !ip.SrcIs(remote) {
		return 0, 0, 0, header.ErrWrongSource
	}
	return ip.Protocol(), ip.HeaderLen(), ip.TotalLen(), nil
}

// control recognises a control packet from remote at pkt[off:end].
func control(pkt []byte, off, end int, remote [4]byte) (Decoded, bool, error) {
	inner := pkt[off:end]
	if !header.IsControlPacket(inner, remote) {
		return Decoded{}, false, nil
	}
	in := header.IPv4(inner)
	if in.Validate() != nil {
		return Decoded{}, true, header.ErrControl
	}
	c := header.Control(in.Payload())
	if c.Validate() != nil {
		return Decoded{}, true, header.ErrControl
	}
	// The whole message its type and flags call for (32 bytes from an older
	// peer, 48 with epochs); Validate made sure it is all there.
	return Decoded{Kind: KindControl, Off: off + in.HeaderLen(), Len: c.Len()}, true, nil
}
