package lab

import (
	"context"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/emulator"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

func TestParseFaults(t *testing.T) {
	got, err := ParseFaults([]string{"blackhole:link1@8s-16s,down:link2@8s", "down:link2@1500ms-12s"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Fault{
		{Kind: FaultBlackhole, Link: 0, Start: 8 * time.Second, End: 16 * time.Second},
		{Kind: FaultDown, Link: 1, Start: 8 * time.Second},
		{Kind: FaultDown, Link: 1, Start: 1500 * time.Millisecond, End: 12 * time.Second},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("fault %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if s := got[0].String(); s != "blackhole:link1@8s-16s" {
		t.Errorf("String %q", s)
	}
}

func TestParseFaultErrorsNameWhatIsWrong(t *testing.T) {
	for _, tt := range []struct{ spec, want string }{
		{"blackhole", "want KIND:linkN@START"},
		{"flap:link1@2s", `no fault kind "flap"`},
		{"down:link1", "no @START"},
		{"down:uplink1@2s", `link "uplink1"`},
		{"down:link0@2s", `link "link0"`},
		{"down:linkx@2s", `link "linkx"`},
		{"down:link1@soon", `start "soon"`},
		{"down:link1@-1s", `start ""`},
		{"down:link1@2s-later", `end "later"`},
		{"down:link1@4s-2s", "end 2s is not after start 4s"},
		{"blackhole:link1@2s", "a blackhole needs an end"},
	} {
		_, err := ParseFaults([]string{tt.spec})
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.spec) {
			t.Errorf("%s: %v, want the spec and %q", tt.spec, err, tt.want)
		}
	}
	fs, _ := ParseFaults([]string{"blackhole:link3@1s-2s"})
	if err := checkFaults(fs, 2, 6*time.Second); err == nil || !strings.Contains(err.Error(), "only 2 links") {
		t.Errorf("link3 of 2: %v", err)
	}
	fs, _ = ParseFaults([]string{"down:link1@7s"})
	if err := checkFaults(fs, 2, 6*time.Second); err == nil || !strings.Contains(err.Error(), "starts after the 6s run") {
		t.Errorf("7s of 6s: %v", err)
	}
	fs, _ = ParseFaults([]string{"blackhole:link1@2s-7s"})
	if err := checkFaults(fs, 2, 6*time.Second); err == nil || !strings.Contains(err.Error(), "ends after the 6s run") {
		t.Errorf("7s of 6s: %v", err)
	}
}

func TestGapAndRates(t *testing.T) {
	bins := []int64{5, 0, 0, 7, 0, 0, 0, 9, 10, 10}
	if g := longestGap(bins); g != 300*time.Millisecond {
		t.Errorf("longest gap %v, want 300ms", g)
	}
	if r, ok := binRate(bins, 700*time.Millisecond, time.Second); !ok || math.Abs(r-float64(29)*8/0.3/1e6) > 1e-9 {
		t.Errorf("rate after %v %v", r, ok)
	}
	if _, ok := binRate(bins, time.Second, time.Second); ok {
		t.Error("a rate over no bins")
	}
	from, to := faultWindow([]Fault{{Start: 2 * time.Second, End: 4 * time.Second}, {Start: 3 * time.Second}}, 6*time.Second)
	if from != 2*time.Second || to != 6*time.Second {
		t.Errorf("window %v-%v, want 2s-6s", from, to)
	}
}

// replies counts the echo replies of count pings from site A to dst.
func replies(t *testing.T, n *netns.Net, dst string, count int) int {
	t.Helper()
	rtts, err := traffic.Ping(context.Background(), n.NS("a"), dst, count, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, r := range rtts {
		if r > 0 {
			got++
		}
	}
	return got
}

// carrier reports whether uplink i is up with carrier on both sites.
func carrier(t *testing.T, n *netns.Net, i int) bool {
	t.Helper()
	for _, side := range []string{"a", "b"} {
		l, err := n.NS(side).NL.LinkByName(netns.UplinkName(i))
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().OperState.String() != "up" {
			return false
		}
	}
	return true
}

// TestBlackholeDropsAndKeepsCarrier: through the WAN emulator, a blackhole
// on uplink 1 stops everything it carried (no echo comes back, nor does the
// emulator's wire deliver an A→B byte that B's stack takes) while both
// sites' ul0 stay up with carrier and uplink 2 carries on; once stopped,
// uplink 1 carries again.
func TestBlackholeDropsAndKeepsCarrier(t *testing.T) {
	requireRoot(t)
	n, err := emulator.WANTopology(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	emu, err := emulator.StartWAN(n, make([][2]emulator.Params, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()
	link1, link2 := netns.UplinkAddr(0, 2), netns.UplinkAddr(1, 2)
	if got := replies(t, n, link1, 5); got == 0 {
		t.Fatal("uplink 1 carries nothing before the blackhole")
	}
	prog, err := loadDropProg()
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	b, err := StartBlackhole(n, 0, prog)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	rx0 := ipInReceives(t, n)
	if got := replies(t, n, link1, 10); got != 0 {
		t.Errorf("uplink 1 answered %d of 10 echoes in the blackhole", got)
	}
	if rx := ipInReceives(t, n); rx != rx0 {
		t.Errorf("site B's IP took %d packets while uplink 1 was blackholed", rx-rx0)
	}
	if !carrier(t, n, 0) {
		t.Error("uplink 1 lost carrier in the blackhole")
	}
	if got := replies(t, n, link2, 5); got == 0 {
		t.Error("uplink 2 stopped too")
	}
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := replies(t, n, link1, 10); got < 8 {
		t.Errorf("after the blackhole, uplink 1 answered %d of 10 echoes", got)
	}
}

// ipInReceives is site B's Ip InReceives: packets its stack took in, which
// tc ingress drops never reach.
func ipInReceives(t *testing.T, n *netns.Net) int64 {
	t.Helper()
	v, err := traffic.ProcCounter(n.NS("b"), "snmp", "Ip:", "InReceives")
	if err != nil {
		t.Fatal(err)
	}
	return v
}
