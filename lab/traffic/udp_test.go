package traffic

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
)

// TestUDPReceiverAccounting: duplicates are not received twice, a
// sequence number below the highest seen is out of order, and one beyond
// the flow's is not counted.
func TestUDPReceiverAccounting(t *testing.T) {
	r := newUDPReceiver(10)
	for _, seq := range []uint64{0, 1, 3, 2, 2, 5, 4, 9, 10, 1 << 40} {
		r.account(seq, time.Duration(seq)*time.Millisecond)
	}
	if r.received != 7 || r.outOfOrder != 2 || r.duplicates != 1 || r.highest != 9 {
		t.Fatalf("received %d, out of order %d, duplicates %d, highest %d; want 7, 2, 1, 9",
			r.received, r.outOfOrder, r.duplicates, r.highest)
	}
	p50, p99 := r.delayPercentiles()
	if p50 != 3*time.Millisecond || p99 != 9*time.Millisecond {
		t.Fatalf("delay p50 %v p99 %v, want 3ms 9ms", p50, p99)
	}
}

// checkUDPComplete: every scheduled datagram was sent, all of them
// arrived, in order, at the rate asked for.
func checkUDPComplete(t *testing.T, r UDPResult, rateBps float64, size int, d time.Duration, maxDelay time.Duration) {
	t.Helper()
	t.Logf("%+v", r)
	want := uint64(rateBps * d.Seconds() / float64(size*8))
	if r.Sent != want || r.Skipped != 0 || r.SendErrors != 0 {
		t.Errorf("sent %d (skipped %d, errors %d), want %d", r.Sent, r.Skipped, r.SendErrors, want)
	}
	if r.Received != r.Sent || r.ReceivedPct != 100 || r.OutOfOrder != 0 || r.Duplicates != 0 || r.RcvbufDrops != 0 {
		t.Errorf("received %d of %d (%.2f%%), %d out of order, %d duplicates, %d dropped by the socket",
			r.Received, r.Sent, r.ReceivedPct, r.OutOfOrder, r.Duplicates, r.RcvbufDrops)
	}
	// The schedule does not drift: the sending takes d, less one gap (a
	// sleep per datagram without catching up would be off by its oversleep
	// times thousands; the margin is for a loaded machine).
	if dt := r.SendTime - d; dt > d/20 || dt < -d/20 {
		t.Errorf("sent for %v, want %v", r.SendTime, d)
	}
	if math.Abs(r.GoodputMbps-rateBps/1e6) > 0.05*rateBps/1e6 {
		t.Errorf("goodput %.2f Mbit/s, want %.2f", r.GoodputMbps, rateBps/1e6)
	}
	if r.DelayP50 <= 0 || r.DelayP50 > r.DelayP99 || r.DelayP99 > maxDelay {
		t.Errorf("delay p50 %v p99 %v, want 0 < p50 <= p99 <= %v", r.DelayP50, r.DelayP99, maxDelay)
	}
}

// TestUDPFlowLoopback: 20 Mbit/s of 1200-byte datagrams over loopback in
// this namespace (no root needed).
func TestUDPFlowLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := UDPFlow(ctx, nil, nil, "127.0.0.1", 20e6, 1200, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	checkUDPComplete(t, r, 20e6, 1200, 2*time.Second, 100*time.Millisecond)
}

// TestUDPFlowNamespaces: over a 50 Mbit/s link (TBF, 50 ms queue) between
// two namespaces, 25 Mbit/s arrives whole and in order; 100 Mbit/s loses
// about half, and the TBF queue shows in the delay.
func TestUDPFlowNamespaces(t *testing.T) {
	n := direct(t, 1, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := UDPFlow(ctx, n.NS("a"), n.NS("b"), netns.UplinkAddr(0, 2), 25e6, 1200, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	checkUDPComplete(t, r, 25e6, 1200, 2*time.Second, 100*time.Millisecond)

	r, err = UDPFlow(ctx, n.NS("a"), n.NS("b"), netns.UplinkAddr(0, 2), 100e6, 1200, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("over the rate: %+v", r)
	if r.ReceivedPct < 40 || r.ReceivedPct > 60 || r.OutOfOrder != 0 || r.Received == 0 {
		t.Errorf("100 Mbit/s over 50: received %.1f%%, %d out of order; want about half, in order", r.ReceivedPct, r.OutOfOrder)
	}
	if r.GoodputMbps < 40 || r.GoodputMbps > 52 {
		t.Errorf("goodput %.1f Mbit/s over a 50 Mbit/s link", r.GoodputMbps)
	}
	if r.DelayP99 < 20*time.Millisecond {
		t.Errorf("delay p99 %v with the TBF queue full, want tens of ms", r.DelayP99)
	}
}
