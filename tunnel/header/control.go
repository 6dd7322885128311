package header

import "encoding/binary"

// Control message types.
const (
	ControlProbe uint8 = 1 // keepalive, asks for a reply
	ControlReply uint8 = 2 // answer to a probe, echoes its seq and timestamp
)

// ControlMagic starts every control message ("TBND").
const ControlMagic uint32 = 0x54424e44

// ControlVersion is the only control message version.
const ControlVersion = 1

// ControlLen is the length of a control message body.
const ControlLen = 32

// ControlPacketLen is the length of the inner IPv4 packet carrying a control
// message: a 20-byte IPv4 header (protocol 253) and the body.
const ControlPacketLen = IPv4HeaderLen + ControlLen

// Control flags.
const (
	ControlFlagWatermark = 0x0001 // the Watermark field is valid
)

// Control is a view of a tunbond control message. Layout (big endian):
//
//	0  magic "TBND"      4  version  5  type  6  flags (2)
//	8  probe sequence    12 watermark: last bond sequence sent on this path
//	16 timestamp (ns, sender's clock, echoed by a reply)
//	24 packets sent on this path so far
type Control []byte

func (c Control) Magic() uint32     { return binary.BigEndian.Uint32(c[0:4]) }
func (c Control) Version() uint8    { return c[4] }
func (c Control) Type() uint8       { return c[5] }
func (c Control) Flags() uint16     { return binary.BigEndian.Uint16(c[6:8]) }
func (c Control) ProbeSeq() uint32  { return binary.BigEndian.Uint32(c[8:12]) }
func (c Control) Watermark() uint32 { return binary.BigEndian.Uint32(c[12:16]) }
func (c Control) Timestamp() int64  { return int64(binary.BigEndian.Uint64(c[16:24])) }
func (c Control) TxPackets() uint64 { return binary.BigEndian.Uint64(c[24:32]) }
func (c Control) HasWatermark() bool {
	return c.Flags()&ControlFlagWatermark != 0
}

// ControlFields are the values of a control message.
type ControlFields struct {
	Type         uint8
	ProbeSeq     uint32
	Watermark    uint32
	HasWatermark bool
	Timestamp    int64
	TxPackets    uint64
}

// Encode writes f into the first ControlLen bytes of c.
func (f ControlFields) Encode(c Control) {
	binary.BigEndian.PutUint32(c[0:4], ControlMagic)
	c[4] = ControlVersion
	c[5] = f.Type
	var fl uint16
	if f.HasWatermark {
		fl |= ControlFlagWatermark
	}
	binary.BigEndian.PutUint16(c[6:8], fl)
	binary.BigEndian.PutUint32(c[8:12], f.ProbeSeq)
	binary.BigEndian.PutUint32(c[12:16], f.Watermark)
	binary.BigEndian.PutUint64(c[16:24], uint64(f.Timestamp))
	binary.BigEndian.PutUint64(c[24:32], f.TxPackets)
}

// Validate checks length, magic, version and type.
func (c Control) Validate() error {
	if len(c) < ControlLen || c.Magic() != ControlMagic || c.Version() != ControlVersion {
		return ErrControl
	}
	if t := c.Type(); t != ControlProbe && t != ControlReply {
		return ErrControl
	}
	return nil
}

// Fields decodes c; c must be valid.
func (c Control) Fields() ControlFields {
	return ControlFields{
		Type: c.Type(), ProbeSeq: c.ProbeSeq(), Watermark: c.Watermark(),
		HasWatermark: c.HasWatermark(), Timestamp: c.Timestamp(), TxPackets: c.TxPackets(),
	}
}

// EncodeControlPacket writes the inner IPv4 packet carrying f (from src to
// dst, protocol 253, TTL 1) into the first ControlPacketLen bytes of b.
func EncodeControlPacket(b []byte, src, dst [4]byte, f ControlFields) {
	EncodeIPv4(b, ControlPacketLen, 1, ProtoControl, src, dst)
	f.Encode(Control(b[IPv4HeaderLen:]))
}

// IsControlPacket reports whether the inner packet is a tunbond control
// packet from src: IPv4, protocol 253, source src.
func IsControlPacket(inner []byte, src [4]byte) bool {
	return len(inner) >= IPv4HeaderLen && inner[0]>>4 == 4 &&
		IPv4(inner).Protocol() == ProtoControl && IPv4(inner).SrcIs(src)
}
