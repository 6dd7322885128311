package bond

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/reorder"
)

// A 1400-byte IPv4 packet, the size TCP data takes through a bond.
func benchPacket() []byte {
	p := tuntest.Ping(netip.MustParseAddr("10.77.0.2"), netip.MustParseAddr("10.77.0.1"))
	big := make([]byte, 1400)
	copy(big, p)
	big[2], big[3] = 1400>>8, 1400&0xff
	return big
}

// BenchmarkBaselineCopy is the yardstick for the two below: copying the
// packet once, which any forwarder pays at least.
func BenchmarkBaselineCopy(b *testing.B) {
	pkt := benchPacket()
	dst := make([]byte, 2048)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	for b.Loop() {
		copy(dst[encap.Headroom:], pkt)
	}
}

// BenchmarkTxPacket is the per-packet sending work: pick a path (wrr over
// three) and write the GRE header into the headroom.
func BenchmarkTxPacket(b *testing.B) {
	pkt := benchPacket()
	buf := make([]byte, 2048)
	copy(buf[encap.Headroom:], pkt)
	sched := path.NewWeightedBytes(path.NewPaths([]uint32{100, 50, 20}))
	codec := encap.GRE{Key: 7}
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	seq := uint32(0)
	for b.Loop() {
		if sched.Pick(buf[encap.Headroom:encap.Headroom+len(pkt)]) < 0 {
			b.Fatal("no path")
		}
		seq++
		codec.EncapData(buf, encap.Headroom, len(pkt), seq)
	}
}

// BenchmarkRxPacket is the per-packet receiving work: decapsulate an outer
// packet and push it through the reorder buffer (two paths, pairs swapped).
func BenchmarkRxPacket(b *testing.B) {
	codec := encap.GRE{Key: 7}
	remote := [4]byte{198, 51, 100, 1}
	pkt := benchPacket()
	const n = 1024
	outer := make([][]byte, n)
	for i := range outer {
		buf := make([]byte, 2048)
		copy(buf[encap.Headroom:], pkt)
		g := codec.EncapData(buf, encap.Headroom, len(pkt), uint32(i^1))
		o := make([]byte, header.IPv4HeaderLen+len(g))
		header.EncodeIPv4(o, len(o), 64, header.ProtoGRE, remote, [4]byte{192, 0, 2, 1})
		copy(o[header.IPv4HeaderLen:], g)
		outer[i] = o
	}
	released := 0
	rb, _ := reorder.New(reorder.Config{Window: 4096, Timeout: 50 * time.Millisecond, LossGrace: time.Millisecond, Paths: 2},
		func(int) { released++ })
	now := time.Unix(0, 0)
	b.SetBytes(int64(len(pkt)))
	b.ReportAllocs()
	base := uint32(0)
	i := 0
	for b.Loop() {
		d, err := codec.Decap(outer[i], remote)
		if err != nil {
			b.Fatal(err)
		}
		seq := base + d.Seq
		rb.Push(seq, int(seq&1), d.Off, now)
		i++
		if i == n {
			i, base = 0, base+n
		}
	}
	if released == 0 {
		b.Fatal("nothing released")
	}
}
