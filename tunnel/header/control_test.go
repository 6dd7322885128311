package header

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// controlGolden are control messages with the hex of every field, in wire
// order, written out by hand from docs/wire-format.md.
var controlGolden = []struct {
	name string
	f    ControlFields
	hex  []string // one field per string
}{
	{"probe, 32 bytes, watermark",
		ControlFields{Type: ControlProbe, ProbeSeq: 0x01020304, Watermark: 0x0a0b0c0d, HasWatermark: true, Timestamp: 0x1122334455667788, TxPackets: 7},
		[]string{"54424e44", "01", "01", "0001", "01020304", "0a0b0c0d", "1122334455667788", "0000000000000007"}},
	{"reply, 32 bytes, no watermark",
		ControlFields{Type: ControlReply, ProbeSeq: 9, Timestamp: -5, TxPackets: 1 << 40},
		[]string{"54424e44", "01", "02", "0000", "00000009", "00000000", "fffffffffffffffb", "0000010000000000"}},
	{"probe, 48 bytes, epochs and watermark, no peer epoch yet",
		ControlFields{Type: ControlProbe, ProbeSeq: 0xfffffffe, Watermark: 0x80000000, HasWatermark: true, Timestamp: 1, TxPackets: 0,
			HasEpochs: true, Epoch: 0xe1e2e3e4e5e6e7e8},
		[]string{"54424e44", "01", "01", "0003", "fffffffe", "80000000", "0000000000000001", "0000000000000000", "e1e2e3e4e5e6e7e8", "0000000000000000"}},
	{"probe, 48 bytes, epochs, repair offered",
		ControlFields{Type: ControlProbe, ProbeSeq: 4, Watermark: 2, HasWatermark: true, Timestamp: 3, TxPackets: 5,
			Repair: true, HasEpochs: true, Epoch: 6, PeerEpoch: 7},
		[]string{"54424e44", "01", "01", "0007", "00000004", "00000002", "0000000000000003", "0000000000000005", "0000000000000006", "0000000000000007"}},
	{"reply, 48 bytes, epochs",
		ControlFields{Type: ControlReply, ProbeSeq: 3, Timestamp: 0x7fffffffffffffff, TxPackets: 0xffffffffffffffff,
			HasEpochs: true, Epoch: 1, PeerEpoch: 0xfedcba9876543210},
		[]string{"54424e44", "01", "02", "0002", "00000003", "00000000", "7fffffffffffffff", "ffffffffffffffff", "0000000000000001", "fedcba9876543210"}},
}

var feedbackGolden = struct {
	f   FeedbackFields
	hex []string
}{
	FeedbackFields{
		ControlFields: ControlFields{ProbeSeq: 5, Watermark: 0xff, HasWatermark: true, Timestamp: 12345678, TxPackets: 100,
			Epoch: 0xa1a2a3a4a5a6a7a8, PeerEpoch: 0xb1b2b3b4b5b6b7b8},
		HighestSeq: 0xfffffff0, ReceivedAt: 0x0102030405060708, DeliveredBytes: 0xdeadbeef, DeliveredPackets: 0xabc,
	},
	[]string{"54424e44", "01", "03", "0003", "00000005", "000000ff", "0000000000bc614e", "0000000000000064",
		"a1a2a3a4a5a6a7a8", "b1b2b3b4b5b6b7b8",
		"fffffff0", "00000000", "0102030405060708", "00000000deadbeef", "0000000000000abc"},
}

var repairGolden = struct {
	f   RepairFields
	hex []string
}{
	RepairFields{
		ControlFields: ControlFields{ProbeSeq: 2, Watermark: 0x10, HasWatermark: true, Timestamp: 99, TxPackets: 3,
			Epoch: 0xa1a2a3a4a5a6a7a8, PeerEpoch: 0xb1b2b3b4b5b6b7b8},
		Seqs: []uint32{0xfffffffe, 1},
	},
	[]string{"54424e44", "01", "04", "0003", "00000002", "00000010", "0000000000000063", "0000000000000003",
		"a1a2a3a4a5a6a7a8", "b1b2b3b4b5b6b7b8",
		"0002", "0000", "fffffffe", "00000001"},
}

// TestRepairGolden: a repair message is written as docs/wire-format.md
// says, byte for byte, reads back the same, and anything off by a count or
// a byte is refused.
func TestRepairGolden(t *testing.T) {
	want := strings.Join(repairGolden.hex, "")
	n := len(want) / 2
	if repairGolden.f.Len() != n {
		t.Fatalf("Len %d, golden is %d bytes", repairGolden.f.Len(), n)
	}
	b := canary(RepairMaxLen + 8)
	repairGolden.f.Encode(Repair(b))
	if got := hex.EncodeToString(b[:n]); got != want {
		t.Fatalf("Encode wrote\n%s\nwant\n%s", got, want)
	}
	if !bytes.Equal(b[n:], canary(len(b)-n)) {
		t.Fatalf("Encode wrote past %d bytes", n)
	}
	r := Repair(mustHex(want))
	if err := r.Validate(); err != nil || r.Control().Len() != n || r.Count() != 2 {
		t.Fatalf("golden repair: %v, Len %d, Count %d", err, r.Control().Len(), r.Count())
	}
	if seqs := r.AppendSeqs(nil); len(seqs) != 2 || seqs[0] != 0xfffffffe || seqs[1] != 1 {
		t.Fatalf("sequences %x", seqs)
	}
	wantC := repairGolden.f.ControlFields
	wantC.Type, wantC.HasEpochs = ControlRepair, true
	if r.Control().Fields() != wantC {
		t.Fatalf("control fields %+v, want %+v", r.Control().Fields(), wantC)
	}
	if Feedback(r).Validate() == nil {
		t.Fatal("a repair valid as feedback")
	}
	for _, tt := range []struct {
		name string
		b    []byte
	}{
		{"one byte short", r[:n-1]},
		{"no count", r[:ControlEpochLen+1]},
		{"count 0", func() []byte { x := append([]byte(nil), r[:RepairHeaderLen]...); x[48], x[49] = 0, 0; return x }()},
		{"count 65", func() []byte {
			x := append(append([]byte(nil), r[:RepairHeaderLen]...), make([]byte, 4*65)...)
			binary.BigEndian.PutUint16(x[48:], 65)
			return x
		}()},
		{"no epochs", func() []byte { x := append([]byte(nil), r...); x[7] &^= ControlFlagEpochs; return x }()},
	} {
		if Repair(tt.b).Validate() == nil || Control(tt.b).Validate() == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
	most := RepairFields{ControlFields: repairGolden.f.ControlFields, Seqs: make([]uint32, RepairMax)}
	pkt := make([]byte, RepairMaxPacketLen)
	if l := EncodeRepairPacket(pkt, [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1}, most); l != RepairMaxPacketLen {
		t.Fatalf("packet of %d sequences is %d bytes, want %d", RepairMax, l, RepairMaxPacketLen)
	}
	if !IsControlPacket(pkt, [4]byte{192, 0, 2, 1}) || Repair(pkt[IPv4HeaderLen:]).Validate() != nil {
		t.Fatal("the longest repair packet does not read back")
	}
}

// canary fills a buffer longer than any message, to see that Encode writes
// exactly its length.
func canary(n int) []byte { return bytes.Repeat([]byte{0xee}, n) }

func TestControlGolden(t *testing.T) {
	for _, tt := range controlGolden {
		t.Run(tt.name, func(t *testing.T) {
			want := strings.Join(tt.hex, "")
			b := canary(FeedbackLen + 8)
			tt.f.Encode(Control(b))
			n := len(want) / 2
			if tt.f.Len() != n {
				t.Fatalf("Len %d, golden is %d bytes", tt.f.Len(), n)
			}
			if got := hex.EncodeToString(b[:n]); got != want {
				t.Fatalf("Encode wrote\n%s\nwant\n%s", got, want)
			}
			if !bytes.Equal(b[n:], canary(len(b)-n)) {
				t.Fatalf("Encode wrote past %d bytes: %x", n, b[n:])
			}
			c := Control(mustHex(want))
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			if c.Len() != n {
				t.Fatalf("view Len %d, want %d", c.Len(), n)
			}
			if got := c.Fields(); got != tt.f {
				t.Fatalf("Fields %+v, want %+v", got, tt.f)
			}
			if c.Magic() != ControlMagic || c.Version() != ControlVersion || c.Type() != tt.f.Type ||
				c.ProbeSeq() != tt.f.ProbeSeq || c.Watermark() != tt.f.Watermark || c.HasWatermark() != tt.f.HasWatermark ||
				c.Timestamp() != tt.f.Timestamp || c.TxPackets() != tt.f.TxPackets || c.HasEpochs() != tt.f.HasEpochs {
				t.Fatalf("accessors disagree with %+v", tt.f)
			}
			if tt.f.HasEpochs && (c.Epoch() != tt.f.Epoch || c.PeerEpoch() != tt.f.PeerEpoch) {
				t.Fatalf("epochs %#x %#x, want %#x %#x", c.Epoch(), c.PeerEpoch(), tt.f.Epoch, tt.f.PeerEpoch)
			}
		})
	}
}

func TestFeedbackGolden(t *testing.T) {
	want := strings.Join(feedbackGolden.hex, "")
	if len(want) != 2*FeedbackLen {
		t.Fatalf("golden is %d bytes, FeedbackLen %d", len(want)/2, FeedbackLen)
	}
	b := canary(FeedbackLen + 8)
	// Type and HasEpochs are left unset: Encode writes them.
	feedbackGolden.f.Encode(Feedback(b))
	if got := hex.EncodeToString(b[:FeedbackLen]); got != want {
		t.Fatalf("Encode wrote\n%s\nwant\n%s", got, want)
	}
	if !bytes.Equal(b[FeedbackLen:], canary(8)) {
		t.Fatalf("Encode wrote past FeedbackLen: %x", b[FeedbackLen:])
	}
	fb := Feedback(mustHex(want))
	if err := fb.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := fb.Control().Validate(); err != nil || fb.Control().Len() != FeedbackLen {
		t.Fatalf("as a control message: %v, Len %d", err, fb.Control().Len())
	}
	wantF := feedbackGolden.f
	wantF.Type, wantF.HasEpochs = ControlFeedback, true
	if got := fb.Fields(); got != wantF {
		t.Fatalf("Fields %+v\nwant %+v", got, wantF)
	}
	if fb.HighestSeq() != 0xfffffff0 || fb.ReceivedAt() != 0x0102030405060708 ||
		fb.DeliveredBytes() != 0xdeadbeef || fb.DeliveredPackets() != 0xabc {
		t.Fatal("feedback accessors")
	}
	// Reserved bytes are written as 0 and ignored on reading.
	r := mustHex(want)
	r[52], r[55] = 0xff, 0x01
	if err := Feedback(r).Validate(); err != nil || Feedback(r).Fields() != wantF {
		t.Fatalf("reserved bytes set: %v", err)
	}
}

// oldControl is how a tunbond before epochs read a control message: the
// Validate and Fields of its control.go, which read 32 bytes.
func oldControl(b []byte) (ControlFields, bool) {
	if len(b) < 32 || binary.BigEndian.Uint32(b) != 0x54424e44 || b[4] != 1 || b[5] != 1 && b[5] != 2 {
		return ControlFields{}, false
	}
	return ControlFields{Type: b[5], ProbeSeq: binary.BigEndian.Uint32(b[8:]), Watermark: binary.BigEndian.Uint32(b[12:]),
		HasWatermark: binary.BigEndian.Uint16(b[6:])&1 != 0, Timestamp: int64(binary.BigEndian.Uint64(b[16:])),
		TxPackets: binary.BigEndian.Uint64(b[24:])}, true
}

func TestControlOldPeers(t *testing.T) {
	for _, tt := range controlGolden {
		b := mustHex(strings.Join(tt.hex, ""))
		old, ok := oldControl(b)
		base := tt.f
		base.HasEpochs, base.Epoch, base.PeerEpoch = false, 0, 0
		oldBase := base
		oldBase.Repair = false // a flag an old reader ignores
		if !ok || old != oldBase {
			t.Errorf("%s: an old reader gets %+v %v, want %+v", tt.name, old, ok, oldBase)
		}
		// The engine today hands on a view of ControlLen bytes: it reads
		// as the message without epochs, and never past its end.
		if got := Control(b[:ControlLen:ControlLen]).Fields(); got != base {
			t.Errorf("%s: 32-byte view %+v, want %+v", tt.name, got, base)
		}
	}
	// An old peer's messages are what ControlFields without epochs writes.
	old := mustHex(strings.Join(controlGolden[0].hex, ""))
	if got := Control(old).Fields(); got.HasEpochs || got != controlGolden[0].f {
		t.Fatalf("old probe decodes as %+v", got)
	}
	// The carrying packets: 52 bytes without epochs (as always), 68 with.
	for _, f := range []ControlFields{controlGolden[0].f, controlGolden[2].f} {
		b := canary(FeedbackPacketLen + 8)
		EncodeControlPacket(b, [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1}, f)
		n := IPv4HeaderLen + f.Len()
		if want := map[bool]int{false: ControlPacketLen, true: ControlEpochPacketLen}[f.HasEpochs]; n != want {
			t.Fatalf("packet length %d, want %d", n, want)
		}
		ip := IPv4(b[:n])
		if err := ip.Validate(); err != nil || ip.TotalLen() != n || ip.Protocol() != ProtoControl || b[8] != 1 ||
			^Checksum(b[:IPv4HeaderLen], 0) != 0 || !IsControlPacket(b[:n], [4]byte{192, 0, 2, 1}) {
			t.Fatalf("control packet header %x: %v", b[:IPv4HeaderLen], err)
		}
		if err := Control(ip.Payload()).Validate(); err != nil || Control(ip.Payload()).Fields() != f || b[n] != 0xee {
			t.Fatalf("control packet body %x: %v", b[IPv4HeaderLen:n+1], err)
		}
	}
	b := canary(FeedbackPacketLen + 8)
	EncodeFeedbackPacket(b, [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1}, feedbackGolden.f)
	ip := IPv4(b[:FeedbackPacketLen])
	if err := ip.Validate(); err != nil || ip.TotalLen() != FeedbackPacketLen || ^Checksum(b[:IPv4HeaderLen], 0) != 0 ||
		hex.EncodeToString(ip.Payload()) != strings.Join(feedbackGolden.hex, "") || b[FeedbackPacketLen] != 0xee {
		t.Fatalf("feedback packet %x: %v", b[:FeedbackPacketLen+1], err)
	}
}

func TestControlRejects(t *testing.T) {
	probe := strings.Join(controlGolden[0].hex, "")
	epochs := strings.Join(controlGolden[2].hex, "")
	fb := strings.Join(feedbackGolden.hex, "")
	set := func(h string, off int, v ...byte) []byte {
		b := mustHex(h)
		copy(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"31 bytes", mustHex(probe)[:31]},
		{"wrong magic", set(probe, 0, 'T', 'B', 'N', 'C')},
		{"version 0", set(probe, 4, 0)},
		{"version 2", set(probe, 4, 2)},
		{"type 0", set(probe, 5, 0)},
		{"type 4", set(probe, 5, 4)},
		{"type 255", set(probe, 5, 255)},
		{"epochs flag, 32 bytes", set(probe, 7, 0x03)},
		{"epochs flag, 47 bytes", mustHex(epochs)[:47]},
		{"epoch 0", set(epochs, 32, 0, 0, 0, 0, 0, 0, 0, 0)},
		{"feedback without epochs flag", set(fb, 7, 0x01)},
		{"feedback, 79 bytes", mustHex(fb)[:79]},
		{"feedback, 48 bytes", mustHex(fb)[:48]},
		{"feedback, epoch 0", set(fb, 32, 0, 0, 0, 0, 0, 0, 0, 0)},
	}
	for _, tt := range tests {
		if err := Control(tt.b).Validate(); !errors.Is(err, ErrControl) {
			t.Errorf("%s: Control.Validate %v, want ErrControl", tt.name, err)
		}
		if err := Feedback(tt.b).Validate(); !errors.Is(err, ErrControl) {
			t.Errorf("%s: Feedback.Validate %v, want ErrControl", tt.name, err)
		}
	}
	// A valid probe or reply is not feedback.
	for _, h := range []string{probe, epochs} {
		if err := Feedback(mustHex(h + strings.Repeat("00", 32))).Validate(); !errors.Is(err, ErrControl) {
			t.Errorf("probe taken for feedback: %v", err)
		}
	}
	// Unknown flag bits are ignored (as older readers ignore epochs), and
	// bytes past Len are not the message's.
	b := append(set(probe, 6, 0x80, 0x01), 1, 2, 3)
	if err := Control(b).Validate(); err != nil || Control(b).Fields() != controlGolden[0].f {
		t.Fatalf("unknown flag bit: %v %+v", err, Control(b).Fields())
	}
}

// FuzzControl checks Validate and Fields on arbitrary bytes: nothing that
// passes Validate makes a view read out of range, and a valid message
// written back from its Fields is the same message (but unknown flag bits
// and reserved bytes).
func FuzzControl(f *testing.F) {
	for _, tt := range controlGolden {
		f.Add(mustHex(strings.Join(tt.hex, "")))
	}
	fb := mustHex(strings.Join(feedbackGolden.hex, ""))
	f.Add(fb)
	rp := mustHex(strings.Join(repairGolden.hex, ""))
	f.Add(rp)
	f.Add(rp[:len(rp)-1])
	f.Add(fb[:79])
	f.Add(mustHex(strings.Join(controlGolden[2].hex, ""))[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		c := Control(b)
		if c.Validate() != nil {
			if Feedback(b).Validate() == nil {
				t.Fatal("feedback valid where the control message is not")
			}
			return
		}
		n := c.Len()
		if n > len(b) {
			t.Fatalf("valid message of %d bytes calls for %d", len(b), n)
		}
		want := append([]byte(nil), b[:n]...)
		binary.BigEndian.PutUint16(want[6:], c.Flags()&(ControlFlagWatermark|ControlFlagEpochs|ControlFlagRepair))
		got := make([]byte, n)
		if (c.Type() == ControlRepair) != (Repair(b).Validate() == nil) {
			t.Fatalf("type %d: valid as a repair: %v", c.Type(), Repair(b).Validate() == nil)
		}
		if c.Type() == ControlRepair {
			want[50], want[51] = 0, 0
			RepairFields{ControlFields: c.Fields(), Seqs: Repair(b).AppendSeqs(nil)}.Encode(Repair(got))
		} else if c.Type() == ControlFeedback {
			fb := Feedback(b)
			if err := fb.Validate(); err != nil {
				t.Fatalf("valid control message of type feedback: %v", err)
			}
			want[52], want[53], want[54], want[55] = 0, 0, 0, 0
			fb.Fields().Encode(Feedback(got))
		} else {
			if Feedback(b).Validate() == nil {
				t.Fatalf("type %d valid as feedback", c.Type())
			}
			f := c.Fields()
			if f.Len() != n {
				t.Fatalf("Fields Len %d, view Len %d", f.Len(), n)
			}
			f.Encode(Control(got))
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("written back\n%x\nwant\n%x", got, want)
		}
		if Control(got).Validate() != nil {
			t.Fatal("written back invalid")
		}
		_ = Control(b[:ControlLen:ControlLen]).Fields()
	})
}
