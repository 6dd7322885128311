package header

import "encoding/binary"

// FeedbackLen is the length of a feedback message: a control message with
// epochs (ControlEpochLen) and 32 bytes of the path's delivery counters.
const FeedbackLen = ControlEpochLen + 32

// FeedbackPacketLen is the length of the inner IPv4 packet carrying a
// feedback message.
const FeedbackPacketLen = IPv4HeaderLen + FeedbackLen

// Feedback is a view of a feedback message (control type 3): what the
// receiver of a path's data has had from it. Bytes 0-47 are a control
// message with epochs (Control), its probe sequence numbering the path's
// feedbacks and its timestamp the receiver's clock when it was sent. Then
// (big endian):
//
//	48 highest bond sequence received on this path   52 reserved, 0
//	56 received at: the receiver's clock (ns) when that packet arrived
//	64 inner bytes delivered on this path so far
//	72 data packets delivered on this path so far
type Feedback []byte

// Control is the message's first 48 bytes as a control message.
func (f Feedback) Control() Control { return Control(f) }

func (f Feedback) HighestSeq() uint32       { return binary.BigEndian.Uint32(f[48:52]) }
func (f Feedback) ReceivedAt() int64        { return int64(binary.BigEndian.Uint64(f[56:64])) }
func (f Feedback) DeliveredBytes() uint64   { return binary.BigEndian.Uint64(f[64:72]) }
func (f Feedback) DeliveredPackets() uint64 { return binary.BigEndian.Uint64(f[72:80]) }

// Validate checks that f is a valid control message of type feedback (so
// with epochs, and at least FeedbackLen bytes).
func (f Feedback) Validate() error { return Control(f).validateAs(ControlFeedback) }

// FeedbackFields are the values of a feedback message.
type FeedbackFields struct {
	// ControlFields are bytes 0-47; Encode writes Type ControlFeedback and
	// HasEpochs whatever they hold.
	ControlFields
	HighestSeq       uint32 // highest bond sequence received on the path
	ReceivedAt       int64  // receiver's clock (ns) when HighestSeq arrived
	DeliveredBytes   uint64 // inner bytes delivered on the path so far
	DeliveredPackets uint64 // data packets delivered on the path so far
}

// Encode writes f into the first FeedbackLen bytes of b.
func (f FeedbackFields) Encode(b Feedback) {
	c := f.ControlFields
	c.Type, c.HasEpochs = ControlFeedback, true
	c.Encode(Control(b))
	binary.BigEndian.PutUint32(b[48:52], f.HighestSeq)
	binary.BigEndian.PutUint32(b[52:56], 0)
	binary.BigEndian.PutUint64(b[56:64], uint64(f.ReceivedAt))
	binary.BigEndian.PutUint64(b[64:72], f.DeliveredBytes)
	binary.BigEndian.PutUint64(b[72:80], f.DeliveredPackets)
}

// Fields decodes f; f must be valid.
func (f Feedback) Fields() FeedbackFields {
	return FeedbackFields{
		ControlFields: Control(f).Fields(),
		HighestSeq:    f.HighestSeq(), ReceivedAt: f.ReceivedAt(),
		DeliveredBytes: f.DeliveredBytes(), DeliveredPackets: f.DeliveredPackets(),
	}
}

// EncodeFeedbackPacket writes the inner IPv4 packet carrying f (from src to
// dst, protocol 253, TTL 1) into the first FeedbackPacketLen bytes of b.
func EncodeFeedbackPacket(b []byte, src, dst [4]byte, f FeedbackFields) {
	EncodeIPv4(b, FeedbackPacketLen, 1, ProtoControl, src, dst)
	f.Encode(Feedback(b[IPv4HeaderLen:]))
}
