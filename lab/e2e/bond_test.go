package e2e

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

func startBond(t *testing.T, spec lab.BondSpec) *lab.Bond {
	t.Helper()
	requireRoot(t)
	id := newID(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := lab.StartBond(ctx, id, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// startBondOn starts a bond of spec on a built topology (stopped at the
// test's end) and returns it with a context for the test's traffic (2
// minutes).
func startBondOn(t *testing.T, net *netns.Net, spec lab.BondSpec) (*lab.Bond, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	b, err := lab.StartBondOn(ctx, net, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop() })
	return b, ctx
}

// transferResult is how a transfer in the background ended.
type transferResult struct {
	r   traffic.TransferResult
	err error
}

// transferUnderWay starts a 200 MB transfer from site A to site B through
// the bond and returns once `after` bytes have arrived; the channel then
// gives how it ended.
func transferUnderWay(t *testing.T, ctx context.Context, net *netns.Net, after int64, before string) <-chan transferResult {
	t.Helper()
	var progress atomic.Int64
	done := make(chan transferResult, 1)
	go func() {
		r, err := traffic.Transfer(ctx, net.NS("a"), net.NS("b"), lab.BondAddrB, 200<<20, &progress)
		done <- transferResult{r, err}
	}()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for progress.Load() < after {
		select {
		case r := <-done:
			t.Fatalf("transfer ended before %s: %v", before, r.err)
		case <-tick.C:
		}
	}
	return done
}

func TestBondPingAndTransfer(t *testing.T) {
	for _, weights := range [][]int64{{100, 30}, {100, 50, 20}} {
		t.Run(fmt.Sprintf("%d-uplinks", len(weights)), func(t *testing.T) {
			b := startBond(t, lab.BondSpec{Weights: weights, Scheduler: "wrr"}) // the shares follow the weights
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()

			rtts, err := traffic.Ping(ctx, b.Net.NS("a"), lab.BondAddrB, 5, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rtts {
				if r == 0 {
					t.Fatalf("ping %d through the bond got no reply", i)
				}
			}

			before := b.A.Engine().Status()
			res, err := traffic.Transfer(ctx, b.Net.NS("a"), b.Net.NS("b"), lab.BondAddrB, 200<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("200 MB through %d uplinks in %v (%.0f Mbit/s), sha256 %x", len(weights), res.Duration.Round(time.Millisecond), res.GoodputMbps(), res.ReceivedSHA256[:8])

			after := b.A.Engine().Status()
			var total float64
			sum := int64(0)
			for i := range after {
				total += float64(after[i].TxBytes - before[i].TxBytes)
				sum += weights[i]
			}
			for i := range after {
				share := float64(after[i].TxBytes-before[i].TxBytes) / total
				want := float64(weights[i]) / float64(sum)
				t.Logf("%s: %.4f of the bytes, weight share %.4f", after[i].Name, share, want)
				if math.Abs(share-want) > 0.05*want {
					t.Errorf("%s carried %.4f of the bytes, want %.4f ±5%%", after[i].Name, share, want)
				}
			}
		})
	}
}

func TestBondSurvivesUplinkDown(t *testing.T) {
	b := startBond(t, lab.BondSpec{Weights: []int64{1, 1}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Once the transfer is well under way (a quarter of it), take uplink 1
	// down on site A.
	done := transferUnderWay(t, ctx, b.Net, 50<<20, "the uplink went down")
	if err := b.Net.SetLinkUp("a", netns.UplinkName(1), false); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	detect := make(chan time.Duration, 2)
	for _, ep := range []*lab.Bond{b} {
		for _, e := range []interface {
			WaitPath(context.Context, string, bool) error
		}{ep.A.Engine(), ep.B.Engine()} {
			go func() {
				if err := e.WaitPath(ctx, netns.UplinkName(1), false); err != nil {
					detect <- -1
					return
				}
				detect <- time.Since(downAt)
			}()
		}
	}
	for side := 0; side < 2; side++ {
		d := <-detect
		if d < 0 {
			t.Fatal("path never marked down")
		}
		t.Logf("path marked down %v after the link went down", d.Round(time.Millisecond))
		if d > time.Second {
			t.Errorf("path marked down after %v, want under 1s", d)
		}
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("transfer did not survive the uplink going down: %v", r.err)
	}
	t.Logf("200 MB completed in %v with one uplink lost at %d MB; sha256 matches", r.r.Duration.Round(time.Millisecond), 50)
}

// TestIPIPBond runs an IPIP bond (protocols 4 and 41 on raw sockets, no
// sequence, no reordering) with flowhash: ping, and a transfer that arrives
// intact.
func TestIPIPBond(t *testing.T) {
	b := startBond(t, lab.BondSpec{Weights: []int64{1, 1}, Encap: "ipip", Scheduler: "flowhash"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rtts, err := traffic.Ping(ctx, b.Net.NS("a"), lab.BondAddrB, 3, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rtts {
		if r == 0 {
			t.Fatalf("ping %d over IPIP got no reply", i)
		}
	}
	res, err := traffic.Transfer(ctx, b.Net.NS("a"), b.Net.NS("b"), lab.BondAddrB, 20<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.B.Engine().ReorderStats() != nil {
		t.Fatal("an IPIP bond has a reorder buffer")
	}
	st := b.A.Engine().Status()
	if st[0].TxPackets+st[1].TxPackets == 0 {
		t.Fatal("nothing went over the uplinks")
	}
	t.Logf("20 MB over IPIP in %v (%.0f Mbit/s)", res.Duration.Round(time.Millisecond), res.GoodputMbps())
}
