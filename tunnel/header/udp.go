package header

import "encoding/binary"

// UDPHeaderLen is the length of a UDP header.
const UDPHeaderLen = 8

// UDP is a view of a UDP header followed by its payload.
type UDP []byte

func (u UDP) SrcPort() uint16  { return binary.BigEndian.Uint16(u[0:2]) }
func (u UDP) DstPort() uint16  { return binary.BigEndian.Uint16(u[2:4]) }
func (u UDP) Length() int      { return int(binary.BigEndian.Uint16(u[4:6])) }
func (u UDP) Checksum() uint16 { return binary.BigEndian.Uint16(u[6:8]) }

// Validate checks that u holds a whole UDP header and the length it announces.
func (u UDP) Validate() error {
	if len(u) < UDPHeaderLen {
		return ErrTooShort
	}
	if l := u.Length(); l < UDPHeaderLen || l > len(u) {
		return ErrTooShort
	}
	return nil
}

// Payload returns the bytes after the header, up to the length.
func (u UDP) Payload() []byte { return u[UDPHeaderLen:u.Length()] }

// UDPFields are the values of a UDP header.
type UDPFields struct {
	SrcPort, DstPort uint16
	Length           int
	Checksum         uint16
}

// Encode writes f into the first UDPHeaderLen bytes of u.
func (f UDPFields) Encode(u UDP) {
	binary.BigEndian.PutUint16(u[0:2], f.SrcPort)
	binary.BigEndian.PutUint16(u[2:4], f.DstPort)
	binary.BigEndian.PutUint16(u[4:6], uint16(f.Length))
	binary.BigEndian.PutUint16(u[6:8], f.Checksum)
}

// Ports reads the source and destination ports of any transport header
// that starts with them (TCP, UDP, SCTP, UDP-Lite); l4 must hold 4 bytes.
func Ports(l4 []byte) (src, dst uint16) {
	return binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
}
