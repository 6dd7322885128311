package lb

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"testing"
)

func dests(weights ...int) []*Dest {
	var out []*Dest
	for i, w := range weights {
		out = append(out, &Dest{Name: fmt.Sprintf("10.0.0.%d:80", i+1), Weight: w, Up: true})
	}
	return out
}

func randConn(rng *rand.Rand) Conn {
	var a [4]byte
	for i := range a {
		a[i] = byte(rng.IntN(256))
	}
	return Conn{Src: netip.AddrFrom4(a), Dst: netip.MustParseAddr("192.0.2.10"), SrcPort: uint16(rng.IntN(65536)), DstPort: 80, Proto: 6}
}

func TestServerSharesFollowWeights(t *testing.T) {
	for _, name := range []string{"rr", "wrr", "sh", "mh"} {
		weights := []int{5, 3, 2}
		if name == "rr" {
			weights = []int{1, 1, 1}
		}
		d := dests(weights...)
		s, err := New(name, d)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 8))
		count := make([]int, len(d))
		const n = 100000
		for k := 0; k < n; k++ {
			i := s.Pick(randConn(rng))
			if i < 0 {
				t.Fatalf("%s: no server", name)
			}
			count[i]++
		}
		sum := 0
		for _, w := range weights {
			sum += w
		}
		for i, w := range weights {
			want := float64(w) / float64(sum)
			got := float64(count[i]) / n
			if math.Abs(got-want) > 0.01 {
				t.Errorf("%s: server %d share %.4f, want %.4f ±1%%", name, i, got, want)
			}
		}
	}
}

func TestLeastConnectionFormulas(t *testing.T) {
	d := dests(1, 2, 4)
	d[0].Active, d[0].Inactive = 1, 0   // overhead 256, /1 = 256
	d[1].Active, d[1].Inactive = 2, 100 // overhead 612, /2 = 306
	d[2].Active, d[2].Inactive = 4, 10  // overhead 1034, /4 = 258.5
	pick := func(name string) int {
		s, _ := New(name, d)
		return s.Pick(Conn{})
	}
	if got := pick("lc"); got != 0 { // least overhead: 256
		t.Errorf("lc picked %d", got)
	}
	if got := pick("wlc"); got != 0 { // 256 < 258.5 < 306
		t.Errorf("wlc picked %d", got)
	}
	if got := pick("sed"); got != 2 { // (a+1)/w: 2, 1.5, 1.25
		t.Errorf("sed picked %d", got)
	}
	d[1].Active = 0
	if got := pick("nq"); got != 1 { // an idle server first
		t.Errorf("nq picked %d", got)
	}
	d[1].Weight = 0 // no new connections
	for _, name := range []string{"rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "mh"} {
		s, _ := New(name, d)
		rng := rand.New(rand.NewPCG(1, 1))
		for k := 0; k < 1000; k++ {
			if s.Pick(randConn(rng)) == 1 {
				t.Fatalf("%s gave a new connection to a weight-0 server", name)
			}
		}
	}
}

func TestHashSchedulersAreDeterministic(t *testing.T) {
	for _, name := range []string{"sh", "dh", "mh"} {
		a, _ := New(name, dests(3, 1, 2))
		b, _ := New(name, dests(3, 1, 2))
		rng := rand.New(rand.NewPCG(3, 4))
		for k := 0; k < 10000; k++ {
			c := randConn(rng)
			x := a.Pick(c)
			if y := b.Pick(c); x != y || a.Pick(c) != x {
				t.Fatalf("%s: %v went to %d and %d", name, c, x, y)
			}
			c2 := c
			c2.SrcPort++ // sh, dh and mh hash addresses, not ports
			if a.Pick(c2) != x {
				t.Fatalf("%s: port changed the server", name)
			}
		}
	}
	// dh follows the destination.
	s, _ := New("dh", dests(1, 1, 1, 1))
	seen := map[int]bool{}
	for k := 0; k < 64; k++ {
		seen[s.Pick(Conn{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.AddrFrom4([4]byte{192, 0, 2, byte(k)})})] = true
	}
	if len(seen) < 3 {
		t.Fatalf("dh ignores the destination: %v", seen)
	}
}

func TestMaglevMinimalDisruption(t *testing.T) {
	const n = 5
	d := dests(1, 1, 1, 1, 1)
	m := &Maglev{}
	m.Reset(d)
	rng := rand.New(rand.NewPCG(5, 6))
	conns := make([]Conn, 100000)
	before := make([]int, len(conns))
	for k := range conns {
		conns[k] = randConn(rng)
		before[k] = m.Pick(conns[k])
	}
	d[2].Up = false
	m.Reset(d)
	moved, lostServer := 0, 0
	for k, c := range conns {
		after := m.Pick(c)
		if after == 2 {
			t.Fatal("removed server still picked")
		}
		if after != before[k] {
			moved++
		}
		if before[k] == 2 {
			lostServer++
		}
	}
	frac := float64(moved) / float64(len(conns))
	t.Logf("removing 1 of %d servers moved %.4f of connections (its own share %.4f)", n, frac, float64(lostServer)/float64(len(conns)))
	if frac > 1.0/n+0.01 {
		t.Fatalf("moved %.4f of connections, want ≤ 1/N + 1%% = %.4f", frac, 1.0/n+0.01)
	}
}

func TestMaglevTableFollowsWeights(t *testing.T) {
	d := dests(4, 2, 1)
	m := &Maglev{}
	m.Reset(d)
	count := make([]int, 3)
	for _, i := range m.table {
		count[i]++
	}
	for i, w := range []float64{4.0 / 7, 2.0 / 7, 1.0 / 7} {
		if got := float64(count[i]) / float64(len(m.table)); math.Abs(got-w) > 0.01*w {
			t.Errorf("server %d holds %.4f of the table, want %.4f", i, got, w)
		}
	}
}

func TestUnknownScheduler(t *testing.T) {
	if _, err := New("fastest", nil); err == nil {
		t.Fatal("accepted")
	}
	for _, name := range Names {
		s, err := New(name, nil)
		if err != nil || s.Pick(Conn{}) != -1 {
			t.Fatalf("%s with no servers: %v", name, err)
		}
	}
}
