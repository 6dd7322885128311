package header

import "encoding/binary"

// Sealed packets (docs/wire-format.md, "Sealed packets"): with auth, the
// payload of a GRE packet of protocol type EtherTypeSealed is
//
//	0  receiver index (4)   4  counter (8)   12 inner type (2)
//	14 inner packet or control message (encrypted with encrypt: true)
//	last 16: the ChaCha20-Poly1305 tag
const (
	// EtherTypeSealed is the GRE protocol type of a sealed packet (IEEE 802
	// local experimental 1).
	EtherTypeSealed uint16 = 0x88b5
	// EtherTypeControl is the inner type of a tunbond control message
	// carried bare in a sealed packet (IEEE 802 local experimental 2).
	EtherTypeControl uint16 = 0x88b6

	SealedHeaderLen = 14 // receiver index, counter, inner type
	SealedTagLen    = 16 // Poly1305 (or, for handshakes, truncated HMAC-SHA256)
	// SealedOverhead is what sealing adds to an inner packet.
	SealedOverhead = SealedHeaderLen + SealedTagLen

	// SealedHandshakeIndex is the receiver index of a handshake message: no
	// session ever has it.
	SealedHandshakeIndex uint32 = 0
)

// Sealed is a view of a sealed GRE payload; valid once Validate has
// returned nil.
type Sealed []byte

func (s Sealed) ReceiverIndex() uint32 { return binary.BigEndian.Uint32(s[0:4]) }
func (s Sealed) Counter() uint64       { return binary.BigEndian.Uint64(s[4:12]) }
func (s Sealed) InnerType() uint16     { return binary.BigEndian.Uint16(s[12:14]) }

// Inner returns the bytes between the header and the tag.
func (s Sealed) Inner() []byte { return s[SealedHeaderLen : len(s)-SealedTagLen] }

// Tag returns the last SealedTagLen bytes.
func (s Sealed) Tag() []byte { return s[len(s)-SealedTagLen:] }

// Validate checks that s holds a header and a tag.
func (s Sealed) Validate() error {
	if len(s) < SealedOverhead {
		return ErrTooShort
	}
	return nil
}

// SealedFields are the values of a sealed header.
type SealedFields struct {
	ReceiverIndex uint32
	Counter       uint64
	InnerType     uint16
}

// Encode writes f into the first SealedHeaderLen bytes of s.
func (f SealedFields) Encode(s Sealed) {
	binary.BigEndian.PutUint32(s[0:4], f.ReceiverIndex)
	binary.BigEndian.PutUint64(s[4:12], f.Counter)
	binary.BigEndian.PutUint16(s[12:14], f.InnerType)
}
