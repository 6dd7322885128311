package header

import "encoding/binary"

// Handshake control types (docs/wire-format.md, "Sealed packets"). A
// handshake message is a control message carried bare (inner type
// EtherTypeControl) in a sealed packet of receiver index
// SealedHandshakeIndex and counter 0, whose tag is a MAC under a key
// derived from the configured key.
const (
	ControlHandshakeInit     uint8 = 5
	ControlHandshakeResponse uint8 = 6
)

// Handshake lengths.
const (
	HandshakeNonceLen    = 16
	HandshakeInitLen     = 48
	HandshakeResponseLen = 64
)

// Handshake flags.
const (
	// HandshakeFlagEncrypt: the sender's sessions encrypt the inner packet
	// (encrypt: true). Both ends must agree.
	HandshakeFlagEncrypt = 0x0001
	handshakeFlagsKnown  = HandshakeFlagEncrypt
)

// HandshakeInit is a view of a handshake init (control type 5). Layout (big
// endian):
//
//	0  magic "TBND"   4  version 1   5  type 4   6  flags (2)
//	8  timestamp: sender's wall clock (ns), grows with every init
//	16 epoch: the sender's, random, non-zero, new at every start
//	24 sender index: the receiver index the sender assigned to the session
//	28 reserved, 0
//	32 nonce (16 random bytes)
type HandshakeInit []byte

func (m HandshakeInit) Flags() uint16       { return binary.BigEndian.Uint16(m[6:8]) }
func (m HandshakeInit) Timestamp() int64    { return int64(binary.BigEndian.Uint64(m[8:16])) }
func (m HandshakeInit) Epoch() uint64       { return binary.BigEndian.Uint64(m[16:24]) }
func (m HandshakeInit) SenderIndex() uint32 { return binary.BigEndian.Uint32(m[24:28]) }
func (m HandshakeInit) Nonce() []byte       { return m[32:48] }

// Validate checks length, magic, version, type, flags, the reserved word
// and that epoch and sender index are non-zero.
func (m HandshakeInit) Validate() error {
	if len(m) != HandshakeInitLen || !handshakeHeaderOK(m, ControlHandshakeInit) ||
		binary.BigEndian.Uint32(m[28:32]) != 0 || m.Epoch() == 0 || m.SenderIndex() == 0 {
		return ErrControl
	}
	return nil
}

// HandshakeInitFields are the values of an init.
type HandshakeInitFields struct {
	Flags       uint16
	Timestamp   int64
	Epoch       uint64
	SenderIndex uint32
	Nonce       [HandshakeNonceLen]byte
}

// Encode writes f into the first HandshakeInitLen bytes of m.
func (f HandshakeInitFields) Encode(m HandshakeInit) {
	encodeHandshakeHeader(m, ControlHandshakeInit, f.Flags)
	binary.BigEndian.PutUint64(m[8:16], uint64(f.Timestamp))
	binary.BigEndian.PutUint64(m[16:24], f.Epoch)
	binary.BigEndian.PutUint32(m[24:28], f.SenderIndex)
	binary.BigEndian.PutUint32(m[28:32], 0)
	copy(m[32:48], f.Nonce[:])
}

// Fields decodes m; m must be valid.
func (m HandshakeInit) Fields() HandshakeInitFields {
	f := HandshakeInitFields{Flags: m.Flags(), Timestamp: m.Timestamp(), Epoch: m.Epoch(), SenderIndex: m.SenderIndex()}
	copy(f.Nonce[:], m.Nonce())
	return f
}

// HandshakeResponse is a view of a handshake response (control type 6).
// Layout (big endian):
//
//	0  magic "TBND"   4  version 1   5  type 5   6  flags (2)
//	8  epoch: the responder's
//	16 peer epoch: the initiator's, as in the init answered
//	24 sender index: the receiver index the responder assigned
//	28 receiver index: the init's sender index
//	32 nonce (16 random bytes)
//	48 init nonce: the nonce of the init answered
type HandshakeResponse []byte

func (m HandshakeResponse) Flags() uint16         { return binary.BigEndian.Uint16(m[6:8]) }
func (m HandshakeResponse) Epoch() uint64         { return binary.BigEndian.Uint64(m[8:16]) }
func (m HandshakeResponse) PeerEpoch() uint64     { return binary.BigEndian.Uint64(m[16:24]) }
func (m HandshakeResponse) SenderIndex() uint32   { return binary.BigEndian.Uint32(m[24:28]) }
func (m HandshakeResponse) ReceiverIndex() uint32 { return binary.BigEndian.Uint32(m[28:32]) }
func (m HandshakeResponse) Nonce() []byte         { return m[32:48] }
func (m HandshakeResponse) InitNonce() []byte     { return m[48:64] }

// Validate checks length, magic, version, type, flags and that the epochs
// and indexes are non-zero.
func (m HandshakeResponse) Validate() error {
	if len(m) != HandshakeResponseLen || !handshakeHeaderOK(m, ControlHandshakeResponse) ||
		m.Epoch() == 0 || m.PeerEpoch() == 0 || m.SenderIndex() == 0 || m.ReceiverIndex() == 0 {
		return ErrControl
	}
	return nil
}

// HandshakeResponseFields are the values of a response.
type HandshakeResponseFields struct {
	Flags         uint16
	Epoch         uint64
	PeerEpoch     uint64
	SenderIndex   uint32
	ReceiverIndex uint32
	Nonce         [HandshakeNonceLen]byte
	InitNonce     [HandshakeNonceLen]byte
}

// Encode writes f into the first HandshakeResponseLen bytes of m.
func (f HandshakeResponseFields) Encode(m HandshakeResponse) {
	encodeHandshakeHeader(m, ControlHandshakeResponse, f.Flags)
	binary.BigEndian.PutUint64(m[8:16], f.Epoch)
	binary.BigEndian.PutUint64(m[16:24], f.PeerEpoch)
	binary.BigEndian.PutUint32(m[24:28], f.SenderIndex)
	binary.BigEndian.PutUint32(m[28:32], f.ReceiverIndex)
	copy(m[32:48], f.Nonce[:])
	copy(m[48:64], f.InitNonce[:])
}

// Fields decodes m; m must be valid.
func (m HandshakeResponse) Fields() HandshakeResponseFields {
	f := HandshakeResponseFields{Flags: m.Flags(), Epoch: m.Epoch(), PeerEpoch: m.PeerEpoch(),
		SenderIndex: m.SenderIndex(), ReceiverIndex: m.ReceiverIndex()}
	copy(f.Nonce[:], m.Nonce())
	copy(f.InitNonce[:], m.InitNonce())
	return f
}

func encodeHandshakeHeader(m []byte, typ uint8, flags uint16) {
	binary.BigEndian.PutUint32(m[0:4], ControlMagic)
	m[4] = ControlVersion
	m[5] = typ
	binary.BigEndian.PutUint16(m[6:8], flags)
}

func handshakeHeaderOK(m []byte, typ uint8) bool {
	return binary.BigEndian.Uint32(m[0:4]) == ControlMagic && m[4] == ControlVersion && m[5] == typ &&
		binary.BigEndian.Uint16(m[6:8])&^handshakeFlagsKnown == 0
}
