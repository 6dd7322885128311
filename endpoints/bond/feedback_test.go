package bond

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// await polls cond every millisecond until it holds or 5 s pass.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(time.Millisecond):
		}
	}
}

// TestEngineLearnsPathsFromFeedback: data on two fake uplinks (rr, so both
// carry it whatever the timing), the receiver sends feedback on each, and
// the sender learns a delivery rate for each path and shows it.
func TestEngineLearnsPathsFromFeedback(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.send(t, 2000)
	await(t, "a learned rate on both paths", func() bool {
		for i := range ep.a.paths {
			if l, ok := ep.a.pathSet.Learned(i); !ok || l.Rate <= 0 {
				return false
			}
		}
		return true
	})
	for i, p := range ep.a.paths {
		if p.feedbackRx.Load() == 0 || ep.b.paths[i].feedbackTx.Load() == 0 {
			t.Errorf("%s: A took %d feedbacks, B sent %d", p.Name, p.feedbackRx.Load(), ep.b.paths[i].feedbackTx.Load())
		}
	}
	st := ep.a.Status()
	if st[0].RateMbit <= 0 || st[0].FeedbackRcvd == 0 {
		t.Errorf("status shows nothing learned: %+v", st[0])
	}
}

// TestEngineStalledPathIsResent: a path that stops carrying A's packets
// (A's side drops everything on it, as a silent blackhole) under traffic
// is taken out of the scheduler once its feedback is missing for
// max(3 RTT, 50 ms), before the keepalives would take it down, and what it
// was carrying is re-sent on the other path: every ping reaches B (a
// re-sent packet may come after later ones: the reorder buffer may have
// given its hole up by then).
func TestEngineStalledPathIsResent(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.send(t, 200) // feedback flows on both paths
	await(t, "feedback on both paths", func() bool {
		return ep.a.paths[0].feedbackRx.Load() > 0 && ep.a.paths[1].feedbackRx.Load() > 0
	})
	ep.upA[0].Down.Store(true)
	const n = 500
	go func() {
		for i := 0; i < n; i++ {
			p := tuntest.Ping(ep.bAddr, ep.aAddr)
			p[len(p)-1], p[len(p)-2] = byte(i), byte(i>>8)
			ep.ta.Outbound <- p
			if i%50 == 49 {
				time.Sleep(5 * time.Millisecond) // a transport's pace: the stall is found while packets flow
			}
		}
	}()
	seen := map[int]bool{}
	timeout := time.After(10 * time.Second)
	for len(seen) < n {
		select {
		case got := <-ep.tb.Inbound:
			seen[int(got[len(got)-1])|int(got[len(got)-2])<<8] = true
		case <-timeout:
			t.Fatalf("%d of %d pings reached B; A: %+v", len(seen), n, ep.a.Status())
		}
	}
	p := ep.a.paths[0]
	if !ep.a.pathSet.Stalled(0) && p.stalls.Load() == 0 {
		t.Fatal("path p0 carried nothing to B, yet it was never stalled")
	}
	if p.resent.Load() == 0 {
		t.Error("nothing re-sent after the stall")
	}
	if st := ep.a.Status(); st[0].Stalls == 0 {
		t.Errorf("status: %+v", st[0])
	}
}

// TestFeedbackCoversTheTail: data that arrives less than a feedback
// interval after the latest feedback, with nothing after it, is reported
// within an interval, not with the next keepalive (10 s here): the sender
// would take the silence for a stall (the reverse direction of a bond that
// carries one flow's ACKs was stalled every second or so, and with the
// other path blackholed, both were).
func TestFeedbackCoversTheTail(t *testing.T) {
	ep := newEnginePairKeepalive(t, encap.GRE{Key: 7}, "rr", 10*time.Second, 1)
	p := ep.a.paths[0]
	covered := func() bool {
		p.estMu.Lock()
		defer p.estMu.Unlock()
		hi, ok := p.tx.log.Highest()
		return ok && p.tx.fed && p.tx.fedUpTo == hi && p.tx.firstUnfed == 0
	}
	for i := 0; i < 3; i++ {
		before := p.feedbackRx.Load()
		ep.send(t, 1) // each right after the feedback on the one before
		await(t, fmt.Sprintf("a feedback covering packet %d", i), func() bool {
			return covered() && p.feedbackRx.Load() > before
		})
	}
}

// TestLastLivePathNeverStalls: a path whose feedback is missing is not
// taken out when no other path could take its traffic (a silence that
// queueing on the way back explains would leave the bond with no path);
// with another path live it is, and a probe goes on it at once.
func TestLastLivePathNeverStalls(t *testing.T) {
	ep := newEnginePairKeepalive(t, encap.GRE{Key: 7}, "rr", 10*time.Second, 1, 1)
	scratch := make([]byte, encap.Headroom+header.FeedbackPacketLen)
	ep.a.pathSet.SetStalled(1, true)
	ep.a.stall(ep.a.paths[0], time.Second, scratch)
	if ep.a.pathSet.Stalled(0) || ep.a.paths[0].stalls.Load() != 0 {
		t.Fatal("the last live path was stalled")
	}
	ep.a.pathSet.SetStalled(1, false)
	ep.a.stall(ep.a.paths[1], time.Second, scratch)
	if ep.a.paths[1].stalls.Load() != 1 { // (its probe's reply may have ended the stall already)
		t.Fatal("a silent path with another live beside it was not stalled")
	}
	// No data flows and the keepalives are 10 s apart: only the probe
	// sent with the stall can bring the path back.
	await(t, "the stalled path's probe answered and the path back", func() bool { return !ep.a.pathSet.Stalled(1) })
}

func TestStallLimit(t *testing.T) {
	ms := time.Millisecond
	for _, tt := range []struct{ min, latest, want time.Duration }{
		{2 * ms, 3 * ms, 50 * ms},    // a short path: StallMin
		{20 * ms, 25 * ms, 60 * ms},  // 3 × its least RTT
		{20 * ms, 90 * ms, 110 * ms}, // queued: its latest RTT + two feedback intervals
		{80 * ms, 85 * ms, 240 * ms}, // a long path
		{0, 0, 50 * ms},              // nothing measured yet
	} {
		if got := stallLimit(tt.min, tt.latest); got != tt.want {
			t.Errorf("stallLimit(%v, %v) = %v, want %v", tt.min, tt.latest, got, tt.want)
		}
	}
}

// TestStallIsNotLearnedAsLoss: what a path lost while it was stalled (a
// blackhole) is not its own random loss: back, it is not learned lossy,
// so neither the lossy trial nor repair takes it for a bad link.
func TestStallIsNotLearnedAsLoss(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "rr", 1, 1)
	ep.send(t, 200)
	await(t, "feedback on both paths", func() bool {
		return ep.a.paths[0].feedbackRx.Load() > 0 && ep.a.paths[1].feedbackRx.Load() > 0
	})
	ep.upA[0].Down.Store(true)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case ep.ta.Outbound <- tuntest.Ping(ep.bAddr, ep.aAddr):
			}
			time.Sleep(100 * time.Microsecond) // a transport's pace
		}
	}()
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-ep.tb.Inbound:
			}
		}
	}()
	defer close(stop)
	p := ep.a.paths[0]
	await(t, "p0 stalled", func() bool { return p.stalls.Load() > 0 })
	fb := p.feedbackRx.Load()
	ep.upA[0].Down.Store(false)
	await(t, "p0 back, with feedback", func() bool { return !ep.a.pathSet.Stalled(0) && p.feedbackRx.Load() > fb+5 })
	if l, _ := ep.a.pathSet.Learned(0); l.LossPPM >= 2000 {
		t.Fatalf("p0 learned %.2f%% own loss from its stall", float64(l.LossPPM)/1e4)
	}
}
