package header

import (
	"encoding/binary"
)

// GRE flag bits in the first two bytes of the header (RFC 2784, RFC 2890).
const (
	GREFlagChecksum = 0x8000 // C
	GREFlagRouting  = 0x4000 // R (RFC 1701, must be zero)
	GREFlagKey      = 0x2000 // K (RFC 2890)
	GREFlagSeq      = 0x1000 // S (RFC 2890)
	GREFlagStrict   = 0x0800 // s (RFC 1701, must be zero)
	greRecurMask    = 0x0700 // Recur (RFC 1701, must be zero)
	greVersionMask  = 0x0007

	// GREBaseLen is the length of the mandatory part of a GRE header.
	GREBaseLen = 4
	// GREMaxLen is the length of a GRE header with checksum, key and sequence.
	GREMaxLen = 16
)

// GRE is a view of a GRE header followed by its payload.
type GRE []byte

// Flags returns the flag and version bits.
func (g GRE) Flags() uint16 { return binary.BigEndian.Uint16(g[0:2]) }

// Version returns the GRE version (0 for RFC 2784).
func (g GRE) Version() uint8 { return uint8(g.Flags() & greVersionMask) }

// Protocol returns the EtherType of the payload.
func (g GRE) Protocol() uint16 { return binary.BigEndian.Uint16(g[2:4]) }

// HasChecksum, HasKey and HasSeq report the optional fields present.
func (g GRE) HasChecksum() bool { return g.Flags()&GREFlagChecksum != 0 }
func (g GRE) HasKey() bool      { return g.Flags()&GREFlagKey != 0 }
func (g GRE) HasSeq() bool      { return g.Flags()&GREFlagSeq != 0 }

// HeaderLen returns the length of the header implied by the flags.
func (g GRE) HeaderLen() int { return GREHeaderLen(g.Flags()) }

// Checksum returns the checksum field; valid only if HasChecksum.
func (g GRE) Checksum() uint16 { return binary.BigEndian.Uint16(g[4:6]) }

// Key returns the key field; valid only if HasKey.
func (g GRE) Key() uint32 { return binary.BigEndian.Uint32(g[g.keyOffset():]) }

// Seq returns the sequence number; valid only if HasSeq.
func (g GRE) Seq() uint32 { return binary.BigEndian.Uint32(g[g.seqOffset():]) }

// Payload returns the bytes after the header.
func (g GRE) Payload() []byte { return g[g.HeaderLen():] }

func (g GRE) keyOffset() int {
	if g.HasChecksum() {
		return 8
	}
	return 4
}

func (g GRE) seqOffset() int {
	o := g.keyOffset()
	if g.HasKey() {
		o += 4
	}
	return o
}

// GREHeaderLen returns the header length for the given flags.
func GREHeaderLen(flags uint16) int {
	n := GREBaseLen
	if flags&GREFlagChecksum != 0 {
		n += 4
	}
	if flags&GREFlagKey != 0 {
		n += 4
	}
	if flags&GREFlagSeq != 0 {
		n += 4
	}
	return n
}

// GREFields are the values written into a GRE header.
type GREFields struct {
	Protocol uint16
	Checksum bool
	Key      uint32
	HasKey   bool
	Seq      uint32
	HasSeq   bool
}

// Flags returns the flag word for f (version 0).
func (f GREFields) Flags() uint16 {
	var fl uint16
	if f.Checksum {
		fl |= GREFlagChecksum
	}
	if f.HasKey {
		fl |= GREFlagKey
	}
	if f.HasSeq {
		fl |= GREFlagSeq
	}
	return fl
}

// HeaderLen is the header length f encodes to.
func (f GREFields) HeaderLen() int { return GREHeaderLen(f.Flags()) }

// Encode writes the header into the first f.HeaderLen() bytes of g, whose
// remaining bytes are the payload already in place (headroom encapsulation).
// The checksum, when asked for, covers the header and the payload.
func (f GREFields) Encode(g GRE) {
	fl := f.Flags()
	binary.BigEndian.PutUint16(g[0:2], fl)
	binary.BigEndian.PutUint16(g[2:4], f.Protocol)
	o := 4
	if f.Checksum {
		g[4], g[5], g[6], g[7] = 0, 0, 0, 0
		o = 8
	}
	if f.HasKey {
		binary.BigEndian.PutUint32(g[o:], f.Key)
		o += 4
	}
	if f.HasSeq {
		binary.BigEndian.PutUint32(g[o:], f.Seq)
	}
	if f.Checksum {
		binary.BigEndian.PutUint16(g[4:6], ^Checksum(g, 0))
	}
}

// Validate checks g as a received GRE packet: long enough for its flags,
// version 0, no RFC 1701 routing/strict/recursion bits, and a correct
// checksum when one is present.
func (g GRE) Validate() error {
	if len(g) < GREBaseLen {
		return ErrTooShort
	}
	fl := g.Flags()
	if fl&greVersionMask != 0 {
		return ErrGREVersion
	}
	if fl&(GREFlagRouting|GREFlagStrict|greRecurMask) != 0 {
		return ErrGREFlags
	}
	if len(g) < GREHeaderLen(fl) {
		return ErrTooShort
	}
	if fl&GREFlagChecksum != 0 && Checksum(g, 0) != 0xffff {
		return ErrChecksum
	}
	return nil
}
