package header

import "encoding/binary"

// TCPMinHeaderLen is the length of a TCP header without options.
const TCPMinHeaderLen = 20

// TCP flag bits (the 14th byte of the header).
const (
	TCPFlagFIN = 0x01
	TCPFlagSYN = 0x02
	TCPFlagRST = 0x04
	TCPFlagPSH = 0x08
	TCPFlagACK = 0x10
)

// TCP is a view of a TCP header followed by its payload.
type TCP []byte

func (t TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(t[0:2]) }
func (t TCP) DstPort() uint16 { return binary.BigEndian.Uint16(t[2:4]) }
func (t TCP) Seq() uint32     { return binary.BigEndian.Uint32(t[4:8]) }
func (t TCP) Ack() uint32     { return binary.BigEndian.Uint32(t[8:12]) }
func (t TCP) DataOffset() int { return int(t[12]>>4) * 4 }
func (t TCP) Flags() uint8    { return t[13] }
func (t TCP) Window() uint16  { return binary.BigEndian.Uint16(t[14:16]) }

// Validate checks that t holds a whole TCP header, options included.
func (t TCP) Validate() error {
	if len(t) < TCPMinHeaderLen {
		return ErrTooShort
	}
	if off := t.DataOffset(); off < TCPMinHeaderLen || off > len(t) {
		return ErrTooShort
	}
	return nil
}
