package header

import "encoding/binary"

// Control message types.
const (
	ControlProbe    uint8 = 1 // keepalive, asks for a reply
	ControlReply    uint8 = 2 // answer to a probe, echoes its seq and timestamp
	ControlFeedback uint8 = 3 // the receiver's report on a path's data (Feedback); always with epochs
	ControlRepair   uint8 = 4 // the receiver asks for lost data packets again (Repair); always with epochs
)

// ControlMagic starts every control message ("TBND").
const ControlMagic uint32 = 0x54424e44

// ControlVersion is the only control message version.
const ControlVersion = 1

// ControlLen is the length of a control message body without epochs: the
// probe and reply every tunbond reads.
const ControlLen = 32

// ControlPacketLen is the length of the inner IPv4 packet carrying a control
// message without epochs: a 20-byte IPv4 header (protocol 253) and the body.
const ControlPacketLen = IPv4HeaderLen + ControlLen

// ControlEpochLen is the length of a control message with epochs
// (ControlFlagEpochs): the 32 bytes of ControlLen, then epoch and peer epoch.
const ControlEpochLen = ControlLen + 16

// ControlEpochPacketLen is the length of the inner IPv4 packet carrying a
// control message with epochs.
const ControlEpochPacketLen = IPv4HeaderLen + ControlEpochLen

// Control flags.
const (
	ControlFlagWatermark = 0x0001 // the Watermark field is valid
	ControlFlagEpochs    = 0x0002 // bytes 32-47 hold epoch and peer epoch
	// ControlFlagRepair: the sender of the message repairs its data (one
	// of its paths loses packets of its own): the receiver may ask for
	// lost packets with repair messages.
	ControlFlagRepair = 0x0004
)

// Control is a view of a tunbond control message. Layout (big endian):
//
//	0  magic "TBND"      4  version  5  type  6  flags (2): ControlFlag*
//	8  probe sequence    12 watermark: last bond sequence sent on this path
//	16 timestamp (ns, sender's clock, echoed by a reply)
//	24 packets sent on this path so far
//	with ControlFlagEpochs:
//	32 epoch: the sender's session epoch (random, non-zero)
//	40 peer epoch: the other end's epoch as the sender last heard it (0: none)
//
// A reader that knows only the first 32 bytes (an older tunbond) reads a
// longer message as its first 32 bytes. Feedback (type 3) continues it.
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

// HasEpochs reports whether the message carries epochs (bytes 32-47).
func (c Control) HasEpochs() bool { return c.Flags()&ControlFlagEpochs != 0 }

// Epoch is the sender's session epoch; only with HasEpochs.
func (c Control) Epoch() uint64 { return binary.BigEndian.Uint64(c[32:40]) }

// PeerEpoch is the receiver's epoch as the sender last heard it (0: none
// yet); only with HasEpochs.
func (c Control) PeerEpoch() uint64 { return binary.BigEndian.Uint64(c[40:48]) }

// Len is the length the message's type and flags call for: FeedbackLen for
// feedback, RepairHeaderLen and 4 bytes a sequence for repair (just
// RepairHeaderLen while c is too short to hold the count), ControlEpochLen
// with epochs, ControlLen otherwise. c must hold at least the 8 bytes up
// to the flags.
func (c Control) Len() int {
	switch {
	case c.Type() == ControlFeedback:
		return FeedbackLen
	case c.Type() == ControlRepair:
		if len(c) < RepairHeaderLen {
			return RepairHeaderLen
		}
		return RepairHeaderLen + 4*Repair(c).Count()
	case c.HasEpochs():
		return ControlEpochLen
	}
	return ControlLen
}

// ControlFields are the values of a control message (probe or reply; a
// feedback message is written from FeedbackFields).
type ControlFields struct {
	Type         uint8
	ProbeSeq     uint32
	Watermark    uint32
	HasWatermark bool
	Timestamp    int64
	TxPackets    uint64
	Repair       bool   // ControlFlagRepair: ask me for lost packets
	HasEpochs    bool   // write Epoch and PeerEpoch (a 48-byte message)
	Epoch        uint64 // the sender's session epoch, non-zero
	PeerEpoch    uint64 // the peer's epoch as last heard, 0 if none
}

// Len is the length Encode writes: ControlEpochLen with epochs, else
// ControlLen.
func (f ControlFields) Len() int {
	if f.HasEpochs {
		return ControlEpochLen
	}
	return ControlLen
}

// Encode writes f into the first f.Len() bytes of c. Without epochs it
// writes exactly the 32 bytes every tunbond reads.
func (f ControlFields) Encode(c Control) {
	binary.BigEndian.PutUint32(c[0:4], ControlMagic)
	c[4] = ControlVersion
	c[5] = f.Type
	var fl uint16
	if f.HasWatermark {
		fl |= ControlFlagWatermark
	}
	if f.HasEpochs {
		fl |= ControlFlagEpochs
	}
	if f.Repair {
		fl |= ControlFlagRepair
	}
	binary.BigEndian.PutUint16(c[6:8], fl)
	binary.BigEndian.PutUint32(c[8:12], f.ProbeSeq)
	binary.BigEndian.PutUint32(c[12:16], f.Watermark)
	binary.BigEndian.PutUint64(c[16:24], uint64(f.Timestamp))
	binary.BigEndian.PutUint64(c[24:32], f.TxPackets)
	if f.HasEpochs {
		binary.BigEndian.PutUint64(c[32:40], f.Epoch)
		binary.BigEndian.PutUint64(c[40:48], f.PeerEpoch)
	}
}

// Validate checks magic, version and type, and that c is as long as its
// type and flags call for (Len). Feedback and repair must carry epochs, a
// repair 1..RepairMax sequences, and a message with epochs a non-zero
// epoch. Unknown flag bits are ignored, as older
// readers ignore the epochs flag.
func (c Control) Validate() error {
	if len(c) < ControlLen || c.Magic() != ControlMagic || c.Version() != ControlVersion {
		return ErrControl
	}
	switch c.Type() {
	case ControlProbe, ControlReply:
	case ControlFeedback:
		if !c.HasEpochs() {
			return ErrControl
		}
	case ControlRepair:
		if !c.HasEpochs() || len(c) < RepairHeaderLen || Repair(c).Count() < 1 || Repair(c).Count() > RepairMax {
			return ErrControl
		}
	default:
		return ErrControl
	}
	if len(c) < c.Len() || c.HasEpochs() && c.Epoch() == 0 {
		return ErrControl
	}
	return nil
}

// validateAs is Validate for a message that must be of type typ.
func (c Control) validateAs(typ uint8) error {
	if err := c.Validate(); err != nil {
		return err
	}
	if c.Type() != typ {
		return ErrControl
	}
	return nil
}

// Fields decodes the first Len() bytes but the feedback part; c must be
// valid. A view cut to ControlLen bytes decodes as a message without epochs
// (what an older reader sees), never reading past len(c).
func (c Control) Fields() ControlFields {
	f := ControlFields{
		Type: c.Type(), ProbeSeq: c.ProbeSeq(), Watermark: c.Watermark(),
		HasWatermark: c.HasWatermark(), Timestamp: c.Timestamp(), TxPackets: c.TxPackets(),
		Repair: c.Flags()&ControlFlagRepair != 0,
	}
	if c.HasEpochs() && len(c) >= ControlEpochLen {
		f.HasEpochs, f.Epoch, f.PeerEpoch = true, c.Epoch(), c.PeerEpoch()
	}
	return f
}

// EncodeControlPacket writes the inner IPv4 packet carrying f (from src to
// dst, protocol 253, TTL 1) into the first IPv4HeaderLen+f.Len() bytes of b:
// ControlPacketLen without epochs, ControlEpochPacketLen with them.
func EncodeControlPacket(b []byte, src, dst [4]byte, f ControlFields) {
	EncodeIPv4(b, IPv4HeaderLen+f.Len(), 1, ProtoControl, src, dst)
	f.Encode(Control(b[IPv4HeaderLen:]))
}

// IsControlPacket reports whether the inner packet is a tunbond control
// packet from src: IPv4, protocol 253, source src.
func IsControlPacket(inner []byte, src [4]byte) bool {
	return len(inner) >= IPv4HeaderLen && inner[0]>>4 == 4 &&
		IPv4(inner).Protocol() == ProtoControl && IPv4(inner).SrcIs(src)
}
