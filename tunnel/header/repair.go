package header

import "encoding/binary"

// RepairHeaderLen is the length of a repair message before its sequences: a
// control message with epochs (ControlEpochLen), a count and 2 reserved
// bytes.
const RepairHeaderLen = ControlEpochLen + 4

// RepairMax is the most sequences one repair message asks for.
const RepairMax = 64

// RepairMaxLen is the length of the longest repair message.
const RepairMaxLen = RepairHeaderLen + 4*RepairMax

// RepairMaxPacketLen is the length of the inner IPv4 packet carrying the
// longest repair message.
const RepairMaxPacketLen = IPv4HeaderLen + RepairMaxLen

// Repair is a view of a repair message (control type 4): the receiver asks
// the sender to send again the data packets of the listed bond sequences,
// which every path has moved past without delivering them (lost). Bytes 0-47
// are a control message with epochs (Control), its probe sequence numbering
// the receiver's repair messages and its timestamp the receiver's clock.
// Then (big endian):
//
//	48 count: how many sequences follow, 1..RepairMax   50 reserved, 0
//	52 count × the bond sequence (4 bytes) asked for again
type Repair []byte

// Control is the message's first 48 bytes as a control message.
func (r Repair) Control() Control { return Control(r) }

// Count is how many sequences the message lists.
func (r Repair) Count() int { return int(binary.BigEndian.Uint16(r[48:50])) }

// Seq is the i-th sequence asked for, i < Count().
func (r Repair) Seq(i int) uint32 { return binary.BigEndian.Uint32(r[RepairHeaderLen+4*i:]) }

// Validate checks that r is a valid control message of type repair (so
// with epochs, 1..RepairMax sequences, and as long as they need).
func (r Repair) Validate() error { return Control(r).validateAs(ControlRepair) }

// AppendSeqs appends the sequences r asks for to dst; r must be valid.
func (r Repair) AppendSeqs(dst []uint32) []uint32 {
	for i := 0; i < r.Count(); i++ {
		dst = append(dst, r.Seq(i))
	}
	return dst
}

// RepairFields are the values of a repair message.
type RepairFields struct {
	// ControlFields are bytes 0-47; Encode writes Type ControlRepair and
	// HasEpochs whatever they hold.
	ControlFields
	Seqs []uint32 // 1..RepairMax sequences
}

// Len is the length Encode writes.
func (f RepairFields) Len() int { return RepairHeaderLen + 4*len(f.Seqs) }

// Encode writes f into the first f.Len() bytes of b. f.Seqs must hold 1 to
// RepairMax sequences.
func (f RepairFields) Encode(b Repair) {
	c := f.ControlFields
	c.Type, c.HasEpochs = ControlRepair, true
	c.Encode(Control(b))
	binary.BigEndian.PutUint16(b[48:50], uint16(len(f.Seqs)))
	binary.BigEndian.PutUint16(b[50:52], 0)
	for i, s := range f.Seqs {
		binary.BigEndian.PutUint32(b[RepairHeaderLen+4*i:], s)
	}
}

// EncodeRepairPacket writes the inner IPv4 packet carrying f (from src to
// dst, protocol 253, TTL 1) into the start of b and returns its length.
func EncodeRepairPacket(b []byte, src, dst [4]byte, f RepairFields) int {
	n := IPv4HeaderLen + f.Len()
	EncodeIPv4(b, n, 1, ProtoControl, src, dst)
	f.Encode(Repair(b[IPv4HeaderLen:]))
	return n
}
