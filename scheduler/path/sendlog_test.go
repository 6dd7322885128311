package path

import "testing"

func TestSendLog(t *testing.T) {
	l := NewSendLog(5) // rounds up to 8
	if l.Cap() != 8 {
		t.Fatalf("Cap %d, want 8", l.Cap())
	}
	if _, ok := l.Lookup(0); ok {
		t.Fatal("empty log has sequence 0")
	}
	if _, ok := l.Highest(); ok {
		t.Fatal("empty log has a highest sequence")
	}
	// The path carries some of the bond's sequences, wrapping at 2³².
	seqs := []uint32{0xfffffffb, 0xfffffffd, 0xffffffff, 1, 2, 4}
	for i, s := range seqs {
		if !l.Record(s, uint32(100+i), int64(1000*i)) {
			t.Fatalf("Record(%#x) refused", s)
		}
	}
	tests := []struct {
		seq     uint32
		ok      bool
		packets uint64 // sent on the path up to it
		bytes   uint64
	}{
		{0xfffffffb, false, 0, 0}, // 9 behind 4: out of the log
		{0xfffffffd, true, 2, 201},
		{0xfffffffe, false, 0, 0}, // went on another path
		{0xffffffff, true, 3, 303},
		{0, false, 0, 0},
		{1, true, 4, 406},
		{2, true, 5, 510},
		{4, true, 6, 615},
		{5, false, 0, 0},              // not sent yet
		{4 + 0x80000000, false, 0, 0}, // far ahead
	}
	for _, tt := range tests {
		p, ok := l.Lookup(tt.seq)
		if ok != tt.ok || ok && (p.Seq != tt.seq || p.Packets != tt.packets || p.Bytes != tt.bytes ||
			p.Size != uint32(100+tt.packets-1) || p.SentAt != int64(1000*(tt.packets-1))) {
			t.Errorf("Lookup(%#x) = %+v %v, want %v with %d packets %d bytes", tt.seq, p, ok, tt.ok, tt.packets, tt.bytes)
		}
	}
	if h, ok := l.Highest(); !ok || h != 4 {
		t.Fatalf("highest %d", h)
	}
	if p, b := l.Sent(); p != 6 || b != 615 {
		t.Fatalf("sent %d packets %d bytes", p, b)
	}
	// Loss: of the 5 packets the path carried up to 2, the receiver has 3.
	for _, tt := range []struct {
		seq       uint32
		delivered uint64
		lost      uint64
		ok        bool
	}{{2, 3, 2, true}, {2, 5, 0, true}, {2, 7, 0, true}, {4, 0, 6, true}, {0, 0, 0, false}, {5, 6, 0, false}} {
		if lost, ok := l.Lost(tt.seq, tt.delivered); lost != tt.lost || ok != tt.ok {
			t.Errorf("Lost(%d, %d) = %d %v, want %d %v", tt.seq, tt.delivered, lost, ok, tt.lost, tt.ok)
		}
	}
	// A packet sent again with an older sequence: recorded while in the
	// log, refused once out of it; the highest stays.
	if !l.Record(0xffffffff, 50, 9000) {
		t.Fatal("resend within the log refused")
	}
	if p, ok := l.Lookup(0xffffffff); !ok || p.Packets != 7 || p.SentAt != 9000 {
		t.Fatalf("resent: %+v %v", p, ok)
	}
	if l.Record(0xfffffffc, 50, 9000) {
		t.Fatal("resend of a sequence 8 behind recorded")
	}
	if h, _ := l.Highest(); h != 4 {
		t.Fatalf("highest %d after a resend", h)
	}
	// A sequence 8 ahead takes the slot of the one it laps.
	l.Record(12, 1, 10000)
	if _, ok := l.Lookup(4); ok {
		t.Fatal("4 still found 8 behind 12")
	}
	if p, ok := l.Lookup(12); !ok || p.Packets != 8 {
		t.Fatalf("12: %+v %v", p, ok)
	}
	l.Reset()
	if _, ok := l.Lookup(12); ok {
		t.Fatal("Reset kept records")
	}
	if p, b := l.Sent(); p != 0 || b != 0 {
		t.Fatal("Reset kept counters")
	}
}

func TestSendLogAllocatesNothing(t *testing.T) {
	l := NewSendLog(1 << 10)
	seq := uint32(0)
	if n := testing.AllocsPerRun(10000, func() {
		seq += 2
		l.Record(seq, 1400, int64(seq))
		l.Lookup(seq - 100)
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

func BenchmarkSendLogRecord(b *testing.B) {
	l := NewSendLog(1 << 16)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		l.Record(uint32(i), 1400, int64(i))
	}
}

func BenchmarkSendLogLookup(b *testing.B) {
	l := NewSendLog(1 << 16)
	for i := uint32(0); i < 1<<16; i += 2 {
		l.Record(i, 1400, int64(i))
	}
	b.ReportAllocs()
	var n int
	for i := 0; b.Loop(); i++ {
		if _, ok := l.Lookup(uint32(i) & 0xffff); ok {
			n++
		}
	}
	if n == 0 {
		b.Fatal("nothing found")
	}
}
