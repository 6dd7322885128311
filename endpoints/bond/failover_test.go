package bond

import (
	"bytes"
	"testing"

	"github.com/tunbond/tunbond/scheduler/path"
)

// TestResendRing: what a stalled path re-sends is every packet after the
// last one feedback covered, in send order, as long as its bytes are still
// in the arena; overwritten ones are counted as not kept.
func TestResendRing(t *testing.T) {
	pkt := func(seq uint32, n int) []byte { return bytes.Repeat([]byte{byte(seq)}, n) }
	r := newResendRing()
	for seq := uint32(1); seq <= 10; seq++ {
		r.add(seq*2, pkt(seq*2, 1000)) // another path's sequences in between
	}
	got, missed := r.after(13, nil)
	if len(got) != 4 || missed != 0 {
		t.Fatalf("after 13: %d packets, %d missed; want 14..20, 4 packets", len(got), missed)
	}
	for i, b := range got {
		if want := pkt(uint32(14+2*i), 1000); !bytes.Equal(b, want) {
			t.Fatalf("packet %d holds %x..., want seq %d's bytes", i, b[:2], 14+2*i)
		}
	}
	if got, _ := r.after(20, nil); len(got) != 0 {
		t.Fatalf("after the newest: %d packets", len(got))
	}

	// Wrap the arena: the oldest packets' bytes go, the newest stay intact
	// across the wrap (whose skipped tail counts as taken).
	r = newResendRing()
	const size = 1500
	n := resendBytes/size + 100 // more than the arena holds
	for seq := 1; seq <= n; seq++ {
		r.add(uint32(seq), pkt(uint32(seq), size))
	}
	got, missed = r.after(0, nil) // all of them (fewer than the index holds)
	if missed == 0 {
		t.Fatal("more was asked for than the arena holds, yet nothing counted as not kept")
	}
	if kept := len(got); kept+missed != n {
		t.Fatalf("%d kept + %d missed of %d asked for", kept, missed, n)
	}
	for i, b := range got {
		seq := n - len(got) + 1 + i
		if !bytes.Equal(b, pkt(uint32(seq), size)) {
			t.Fatalf("kept packet %d (seq %d) was written over", i, seq)
		}
	}
	if len(got) < resendBytes/size-1 {
		t.Fatalf("kept %d packets of %d bytes in a %d-byte arena", len(got), size, resendBytes)
	}
	r.reset()
	if got, _ := r.after(0, nil); len(got) != 0 {
		t.Fatalf("after reset: %d packets", len(got))
	}
}

// BenchmarkTxRecord is what the feedback and failover add to each packet
// sent: its SendLog record and its copy in the resend ring (compare with
// BenchmarkBaselineCopy, one copy of the same packet).
func BenchmarkTxRecord(b *testing.B) {
	l := newTestLearning()
	pkt := make([]byte, 1400+12)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for i := 0; i < b.N; i++ {
		l.log.Record(uint32(i), 1400, int64(i))
		l.keep.add(uint32(i), pkt)
	}
}

func newTestLearning() txLearning {
	return txLearning{log: path.NewSendLog(sendLogSequences), keep: newResendRing()}
}
