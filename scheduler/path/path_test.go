package path

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// udp4 returns an IPv4/UDP packet of n bytes (n ≥ 28) for the given flow.
func udp4(n int, src uint32, sport uint16) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[9] = 17
	binary.BigEndian.PutUint32(p[12:], src)
	binary.BigEndian.PutUint32(p[16:], 0x0a4d0002)
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], 5201)
	return p
}

func TestRoundRobinSkipsDownPaths(t *testing.T) {
	p := NewPaths([]uint32{1, 1, 1})
	rr := NewRoundRobin(p)
	got := []int{rr.Pick(nil), rr.Pick(nil), rr.Pick(nil), rr.Pick(nil)}
	if want := []int{0, 1, 2, 0}; !equal(got, want) {
		t.Fatalf("picks %v, want %v", got, want)
	}
	p.SetUp(1, false)
	got = []int{rr.Pick(nil), rr.Pick(nil), rr.Pick(nil)}
	if want := []int{2, 0, 2}; !equal(got, want) {
		t.Fatalf("with path 1 down: picks %v, want %v", got, want)
	}
	p.SetUp(0, false)
	p.SetUp(2, false)
	if i := rr.Pick(nil); i != -1 {
		t.Fatalf("all down: picked %d", i)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// shares sends 100k packets of mixed sizes and returns each path's byte share.
func shares(t *testing.T, s Scheduler, n int) []float64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{40, 52, 576, 1400, 1500}
	bytes := make([]float64, n)
	total := 0.0
	pkts := make([][]byte, len(sizes))
	for i, sz := range sizes {
		pkts[i] = udp4(sz, 1, 1)
	}
	for k := 0; k < 100000; k++ {
		pkt := pkts[rng.IntN(len(pkts))]
		i := s.Pick(pkt)
		if i < 0 {
			t.Fatal("no path picked")
		}
		bytes[i] += float64(len(pkt))
		total += float64(len(pkt))
	}
	for i := range bytes {
		bytes[i] /= total
	}
	return bytes
}

func TestWeightedBytesShares(t *testing.T) {
	for _, weights := range [][]uint32{{100, 30}, {1, 1}, {100, 50, 20}, {7, 1, 1, 1}} {
		p := NewPaths(weights)
		got := shares(t, NewWeightedBytes(p), len(weights))
		sum := 0.0
		for _, w := range weights {
			sum += float64(w)
		}
		for i, w := range weights {
			want := float64(w) / sum
			if math.Abs(got[i]-want) > 0.01*want {
				t.Errorf("weights %v: path %d byte share %.4f, want %.4f ±1%%", weights, i, got[i], want)
			}
		}
	}
}

func TestWeightedBytesRuntimeChanges(t *testing.T) {
	p := NewPaths([]uint32{1, 1})
	w := NewWeightedBytes(p)
	shares(t, w, 2)
	p.SetWeight(0, 3)
	got := shares(t, w, 2)
	if math.Abs(got[0]-0.75) > 0.0075 {
		t.Fatalf("after weight change: share %.4f, want 0.75", got[0])
	}
	p.SetUp(1, false)
	for k := 0; k < 100; k++ {
		if i := w.Pick(udp4(100, 1, 1)); i != 0 {
			t.Fatalf("picked down path %d", i)
		}
	}
	// A path that comes back after a long absence shares at once, no burst.
	shares(t, w, 2)
	p.SetUp(1, true)
	run, longest, last := 0, 0, -1
	for k := 0; k < 1000; k++ {
		i := w.Pick(udp4(1000, 1, 1))
		if i == last {
			run++
		} else {
			run = 1
		}
		last = i
		longest = max(longest, run)
	}
	if longest > 4 {
		t.Fatalf("after rejoin one path took %d packets in a row", longest)
	}
	p.SetWeight(0, 0)
	if i := w.Pick(udp4(100, 1, 1)); i != 1 {
		t.Fatalf("weight 0 path still picked (%d)", i)
	}
}

func TestFlowHashStickyAndMinimalMoves(t *testing.T) {
	p := NewPaths([]uint32{2, 1, 1})
	f := NewFlowHash(p)
	const flows = 20000
	before := make([]int, flows)
	count := make([]int, 3)
	for k := range before {
		pkt := udp4(60, uint32(k), uint16(k*7))
		before[k] = f.Pick(pkt)
		if again := f.Pick(udp4(1400, uint32(k), uint16(k*7))); again != before[k] {
			t.Fatalf("flow %d moved from %d to %d with packet size", k, before[k], again)
		}
		count[before[k]]++
	}
	for i, want := range []float64{0.5, 0.25, 0.25} {
		if got := float64(count[i]) / flows; math.Abs(got-want) > 0.02 {
			t.Errorf("path %d carries %.3f of flows, want %.2f", i, got, want)
		}
	}
	p.SetUp(1, false)
	for k := range before {
		now := f.Pick(udp4(60, uint32(k), uint16(k*7)))
		if now == 1 {
			t.Fatal("down path picked")
		}
		if before[k] != 1 && now != before[k] {
			t.Fatalf("flow %d on healthy path %d moved to %d", k, before[k], now)
		}
	}
}

func BenchmarkPick(b *testing.B) {
	pkt := udp4(1400, 1, 1)
	for _, name := range Names {
		b.Run(name, func(b *testing.B) {
			s, _ := New(name, NewPaths([]uint32{100, 30, 50}))
			b.ReportAllocs()
			for b.Loop() {
				s.Pick(pkt)
			}
		})
	}
}

func TestEarliestArrival(t *testing.T) {
	// fibre 300 Mbit/s 8 ms, LTE 30 Mbit/s 40 ms
	p := NewPaths([]uint32{300, 30})
	p.SetDelay(0, 8*time.Millisecond)
	p.SetDelay(1, 40*time.Millisecond)
	now := time.Unix(0, 0)
	e := NewEarliestArrival(p, func() time.Time { return now })
	pkt := udp4(1472, 1, 1) // 1500 bytes with the headers: 40 µs on the fibre
	// Light traffic: one packet a millisecond always takes the fibre.
	for k := 0; k < 100; k++ {
		if i := e.Pick(pkt); i != 0 {
			t.Fatalf("light traffic went to path %d", i)
		}
		now = now.Add(time.Millisecond)
	}
	// Saturating traffic (a packet every 20 µs = 600 Mbit/s offered):
	// the LTE is used once the fibre's queue passes 32 ms, then both share
	// in proportion to their rates.
	count := []int{0, 0}
	first := -1
	for k := 0; k < 60000; k++ {
		i := e.Pick(pkt)
		count[i]++
		if i == 1 && first < 0 {
			first = k
		}
		now = now.Add(20 * time.Microsecond)
	}
	if first < 1500 {
		t.Fatalf("LTE used after %d packets, before the fibre queue reached the delay difference", first)
	}
	share := float64(count[1]) / 60000
	if share < 0.05 || share > 0.12 {
		t.Fatalf("LTE share %.3f under saturation, want near 30/330", share)
	}
	// Measured queueing corrects a model that thinks the fibre is free:
	// at light traffic, 40 ms of queue on the fibre sends to the LTE.
	now = now.Add(time.Minute)
	p.SetQueueUntil(0, now.Add(40*time.Millisecond))
	if i := e.Pick(pkt); i != 1 {
		t.Fatalf("fibre with 40 ms of measured queue still picked")
	}
	now = now.Add(41 * time.Millisecond) // that queue has drained
	if i := e.Pick(pkt); i != 0 {
		t.Fatalf("fibre avoided after its measured queue drained")
	}
	p.SetUp(0, false)
	if i := e.Pick(pkt); i != 1 {
		t.Fatalf("with the fibre down: path %d", i)
	}
}
