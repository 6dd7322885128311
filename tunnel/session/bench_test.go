package session

import (
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

const benchInner = 1400

func benchSessions(b *testing.B, encrypt bool) (*Session, *Table) {
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
	var t Table
	t.Install(newSession(r2i, i2r, 2, 1, 2, 1, false, encrypt))
	return newSession(i2r, r2i, 1, 2, 1, 2, true, encrypt), &t
}

func benchModes(b *testing.B, f func(b *testing.B, encrypt bool)) {
	b.Run("auth", func(b *testing.B) { f(b, false) })
	b.Run("encrypt", func(b *testing.B) { f(b, true) })
}

// BenchmarkSeal seals a 1400-byte inner packet in place.
func BenchmarkSeal(b *testing.B) {
	benchModes(b, func(b *testing.B, encrypt bool) {
		s, _ := benchSessions(b, encrypt)
		buf, off := sealBuf(make([]byte, benchInner))
		b.SetBytes(benchInner)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Seal(buf, off, benchInner, len(greHdr), header.EtherTypeIPv4); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpen opens 1400-byte sealed packets in order through a Table;
// they are sealed in batches with the timer stopped.
func BenchmarkOpen(b *testing.B) {
	benchModes(b, func(b *testing.B, encrypt bool) {
		s, t := benchSessions(b, encrypt)
		const batch = 1024
		pkts := make([][]byte, batch)
		bufs := make([][]byte, batch)
		for i := range bufs {
			bufs[i], _ = sealBuf(make([]byte, benchInner))
		}
		off := len(greHdr) + header.SealedHeaderLen
		b.SetBytes(benchInner)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if i%batch == 0 {
				b.StopTimer()
				for j := range bufs {
					pkts[j], _ = s.Seal(bufs[j], off, benchInner, len(greHdr), header.EtherTypeIPv4)
				}
				b.StartTimer()
			}
			if _, err := t.Open(pkts[i%batch], len(greHdr)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMemcpy1400 is the baseline: copying the inner packet once.
func BenchmarkMemcpy1400(b *testing.B) {
	src, dst := make([]byte, benchInner), make([]byte, benchInner)
	b.SetBytes(benchInner)
	b.ReportAllocs()
	for b.Loop() {
		copy(dst, src)
	}
}
