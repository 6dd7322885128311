package path

import (
	"math"
	"testing"
	"time"

	"github.com/tunbond/tunbond/tunnel/header"
)

const mbit = 1e6 / 8 // bytes/s

func within(got, want, frac float64) bool { return math.Abs(got-want) <= frac*want }

func rateMbit(t *testing.T, e *Estimate) float64 {
	t.Helper()
	r, ok := e.DeliveryRate()
	if !ok {
		t.Fatal("no delivery rate")
	}
	return r / mbit
}

// absDur is |a − b|.
func absDur(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}

func TestEstimateConvergesToRateAndDelay(t *testing.T) {
	const delay, back = 30 * time.Millisecond, 25 * time.Millisecond
	p := newModelPath(20, delay, back, 60*time.Millisecond)
	// Half a second lightly loaded, then more than the path carries: the
	// queue fills. (Only the highest sequence of a feedback gives a delay
	// sample, so a path always full never shows its base.)
	s := newModelSender(p, 8)
	s.run(500 * time.Millisecond)
	s.offered = 26 * mbit
	s.run(3 * time.Second)
	e := &s.est
	if r := rateMbit(t, e); !within(r, 20, 0.02) {
		t.Errorf("delivery rate %.2f Mbit/s, want 20", r)
	}
	// The first packet met an empty queue: the base is the delay (and
	// its own serialization, 0.48 ms) plus the clocks' offset.
	const serialize = 480 * time.Microsecond
	base, ok := e.BaseOneWay()
	if !ok || absDur(base-time.Duration(p.offset), delay+serialize) > 100*time.Microsecond {
		t.Errorf("base one-way delay %v (offset taken off), want %v", base-time.Duration(p.offset), delay+serialize)
	}
	if q := e.QueueDelay(); q < 55*time.Millisecond || q > 61*time.Millisecond {
		t.Errorf("queueing %v, want the 60 ms queue nearly full", q)
	}
	if m := e.MinRTT(); absDur(m, delay+serialize+back) > 100*time.Microsecond {
		t.Errorf("least RTT %v, want %v", m, delay+serialize+back)
	}
	if want := delay + serialize + e.QueueDelay() + back; absDur(e.LatestRTT(), want) > 10*time.Microsecond ||
		e.SmoothedRTT() < e.MinRTT() || e.SmoothedRTT() > e.LatestRTT()+time.Millisecond {
		t.Errorf("latest RTT %v, smoothed %v, want %v", e.LatestRTT(), e.SmoothedRTT(), want)
	}
	if got, want := e.Lost(), p.lostUpTo(s.lastFb.HighestSeq); got != want || want == 0 {
		t.Errorf("lost %d, the queue dropped %d", got, want)
	}
	if e.LastFeedback() == 0 || s.now-e.LastFeedback() > int64(10*time.Millisecond) {
		t.Errorf("last feedback at %d, now %d", e.LastFeedback(), s.now)
	}

	// Lightly loaded, the same path shows no queue.
	p = newModelPath(20, delay, back, 60*time.Millisecond)
	s = newModelSender(p, 8)
	s.run(2 * time.Second)
	if q := s.est.QueueDelay(); q > 100*time.Microsecond {
		t.Errorf("at 8 of 20 Mbit/s: queueing %v", q)
	}
	if r := rateMbit(t, &s.est); !within(r, 8, 0.03) {
		t.Errorf("at 8 of 20 Mbit/s: delivery rate %.2f", r)
	}
	if s.est.Lost() != 0 {
		t.Errorf("at 8 of 20 Mbit/s: %d lost", s.est.Lost())
	}
}

// TestEstimateFollowsRateStep: the delivery rate follows a fall and a rise
// of the path's rate within a second (the window is 10 least RTTs, 500 ms).
func TestEstimateFollowsRateStep(t *testing.T) {
	p := newModelPath(20, 20*time.Millisecond, 30*time.Millisecond, 40*time.Millisecond)
	s := newModelSender(p, 26)
	var check func(now int64, r float64)
	s.onSample = func(now int64, _ Sample) {
		if check != nil {
			r, _ := s.est.DeliveryRate()
			check(now, r/mbit)
		}
	}
	s.run(4 * time.Second)
	if r := rateMbit(t, &s.est); !within(r, 20, 0.02) {
		t.Fatalf("before the step: %.2f Mbit/s, want 20", r)
	}
	step := func(at time.Duration, to float64) {
		p.rate = to * mbit
		check = func(now int64, r float64) {
			if now > int64(at+time.Second) && !within(r, to, 0.05) {
				t.Fatalf("%v after the step to %v Mbit/s: %.2f", time.Duration(now)-at, to, r)
			}
		}
	}
	step(4*time.Second, 5)
	s.run(8 * time.Second)
	step(8*time.Second, 20)
	s.run(12 * time.Second)
	step(12*time.Second, 12)
	s.run(16 * time.Second)
}

// TestEstimateFollowsDelayStep: a rise of the path's delay shows as
// queueing until the base window (DelayWindow) has passed, then as the
// base; a fall shows at once.
func TestEstimateFollowsDelayStep(t *testing.T) {
	const back = 10 * time.Millisecond
	p := newModelPath(20, 20*time.Millisecond, back, 50*time.Millisecond)
	s := newModelSender(p, 10)
	off := time.Duration(p.offset)
	const ser = 480 * time.Microsecond
	base := func() time.Duration {
		b, ok := s.est.BaseOneWay()
		if !ok {
			t.Fatal("no base one-way delay")
		}
		return b - off - ser
	}
	s.run(3 * time.Second)
	if b := base(); absDur(b, 20*time.Millisecond) > 100*time.Microsecond {
		t.Fatalf("base %v, want 20 ms", b)
	}
	p.delay = int64(60 * time.Millisecond)
	s.run(3*time.Second + 500*time.Millisecond)
	if b, q := base(), s.est.QueueDelay(); absDur(b, 20*time.Millisecond) > 100*time.Microsecond || absDur(q, 40*time.Millisecond) > 100*time.Microsecond {
		t.Fatalf("0.5 s after the rise to 60 ms: base %v queueing %v, want 20 ms and 40 ms", b, q)
	}
	if r := s.est.LatestRTT(); absDur(r, 60*time.Millisecond+back+ser) > 100*time.Microsecond {
		t.Fatalf("latest RTT %v after the rise", r)
	}
	s.run(3*time.Second + DelayWindow + 100*time.Millisecond)
	if b, q := base(), s.est.QueueDelay(); absDur(b, 60*time.Millisecond) > 100*time.Microsecond || q > 100*time.Microsecond {
		t.Fatalf("a window after the rise: base %v queueing %v, want 60 ms and none", b, q)
	}
	if m := s.est.MinRTT(); absDur(m, 60*time.Millisecond+back+ser) > 100*time.Microsecond {
		t.Fatalf("least RTT %v a window after the rise", m)
	}
	p.delay = int64(25 * time.Millisecond)
	s.run(14*time.Second + 100*time.Millisecond)
	if b, q := base(), s.est.QueueDelay(); absDur(b, 25*time.Millisecond) > 100*time.Microsecond || q > 100*time.Microsecond {
		t.Fatalf("0.1 s after the fall to 25 ms: base %v queueing %v", b, q)
	}
}

// TestEstimateAppLimited: light traffic the sender marks application-
// limited keeps the learned rate; unmarked, the estimate follows it down.
func TestEstimateAppLimited(t *testing.T) {
	p := newModelPath(20, 20*time.Millisecond, 20*time.Millisecond, 40*time.Millisecond)
	s := newModelSender(p, 26)
	s.run(2 * time.Second)
	s.offered, s.appLimited = 4*mbit, true
	marked := 0
	s.onSample = func(_ int64, sm Sample) {
		if sm.HasRate && sm.AppLimited {
			marked++
		}
	}
	s.run(5 * time.Second)
	if r := rateMbit(t, &s.est); !within(r, 20, 0.02) || marked < 200 {
		t.Fatalf("3 s of app-limited 4 Mbit/s (%d samples): %.2f Mbit/s, want 20 kept", marked, r)
	}
	s.appLimited = false
	s.run(6 * time.Second)
	if r := rateMbit(t, &s.est); !within(r, 4, 0.05) {
		t.Fatalf("1 s of 4 Mbit/s not app-limited: %.2f Mbit/s, want 4", r)
	}
}

// TestEstimateCountsLoss: packets lost at random and in the full queue are
// counted exactly, on a path that carries one bond sequence in about two.
func TestEstimateCountsLoss(t *testing.T) {
	p := newModelPath(10, 15*time.Millisecond, 15*time.Millisecond, 30*time.Millisecond)
	p.loss = 0.02
	s := newModelSender(p, 12)
	var last uint64
	samples := 0
	s.onSample = func(_ int64, sm Sample) {
		if !sm.HasLost || sm.Stale || sm.SeqNotInLog {
			t.Fatalf("feedback without a loss count: %+v", sm)
		}
		if want := p.lostUpTo(s.lastFb.HighestSeq); sm.Lost != want {
			t.Fatalf("lost %d, the model dropped %d up to %#x", sm.Lost, want, s.lastFb.HighestSeq)
		}
		if sm.Lost < last {
			t.Fatalf("loss count went back from %d to %d", last, sm.Lost)
		}
		last = sm.Lost
		samples++
	}
	s.run(4 * time.Second)
	sent, _ := s.log.Sent()
	if samples < 350 || last < sent/20 {
		t.Fatalf("%d feedbacks, %d of %d lost", samples, last, sent)
	}
	// Random loss does not take the rate below the path's: it was not
	// delivered, so the path did not carry it.
	if r := rateMbit(t, &s.est); !within(r, 10, 0.03) {
		t.Fatalf("rate %.2f Mbit/s at 2%% loss, want 10", r)
	}
}

func TestEstimateIgnoresStaleFeedback(t *testing.T) {
	log := NewSendLog(64)
	for i := uint32(1); i <= 20; i++ {
		log.Record(i, 1000, int64(i)*int64(time.Millisecond))
	}
	var e Estimate
	fb := func(seq, high uint32, recvAt int64, packets uint64) header.FeedbackFields {
		return header.FeedbackFields{ControlFields: header.ControlFields{ProbeSeq: seq, Timestamp: recvAt},
			HighestSeq: high, ReceivedAt: recvAt, DeliveredBytes: packets * 1000, DeliveredPackets: packets}
	}
	ms := int64(time.Millisecond)
	if s := e.OnFeedback(20*ms, fb(1, 10, 15*ms, 10), log, false); s.Stale || !s.HasRTT || s.RTT != 10*time.Millisecond || s.HasRate {
		t.Fatalf("first feedback: %+v", s)
	}
	for _, seq := range []uint32{1, 0, 0x80000001} {
		if s := e.OnFeedback(25*ms, fb(seq, 12, 17*ms, 12), log, false); !s.Stale {
			t.Fatalf("feedback %d after 1 taken: %+v", seq, s)
		}
	}
	// 10 packets of 1000 bytes over the receiver's 10 ms (the sender's
	// were 10 ms too): 1 MB/s.
	s := e.OnFeedback(30*ms, fb(2, 20, 25*ms, 18), log, false)
	if !s.HasRate || s.Rate != 8e5 || s.Lost != 2 || s.RTT != 10*time.Millisecond {
		t.Fatalf("second feedback: %+v", s)
	}
	// Not in the log: the receiver's counters still give a rate.
	s = e.OnFeedback(40*ms, fb(3, 99, 35*ms, 28), log, false)
	if !s.SeqNotInLog || s.HasRTT || s.HasOneWay || s.HasLost || !s.HasRate || s.Rate != 1e6 || e.Lost() != 2 {
		t.Fatalf("feedback on a sequence not sent: %+v", s)
	}
	// Nothing delivered since: no rate sample.
	if s = e.OnFeedback(50*ms, fb(4, 99, 35*ms, 28), log, false); s.HasRate {
		t.Fatalf("no new data: %+v", s)
	}
	e.Reset()
	if _, ok := e.DeliveryRate(); ok || e.MinRTT() != 0 || e.Lost() != 0 || e.LastFeedback() != 0 {
		t.Fatal("Reset kept estimates")
	}
	if s := e.OnFeedback(60*ms, fb(1, 20, 55*ms, 20), log, false); s.Stale {
		t.Fatal("after Reset, feedback 1 is stale")
	}
}

func TestEstimateAllocatesNothing(t *testing.T) {
	p := newModelPath(20, 20*time.Millisecond, 20*time.Millisecond, 40*time.Millisecond)
	s := newModelSender(p, 26)
	s.run(time.Second)
	f := s.lastFb
	n := testing.AllocsPerRun(1000, func() {
		f.ProbeSeq++
		s.est.OnFeedback(s.now, f, s.log, false)
		s.log.Record(s.seq+1, 1200, s.now)
		s.seq++
	})
	if n != 0 {
		t.Fatalf("%v allocations per feedback and packet", n)
	}
}

// BenchmarkEstimateOnFeedback: a feedback every 8 packets of 200 µs, each
// one giving a rate, a delay and an RTT sample.
func BenchmarkEstimateOnFeedback(b *testing.B) {
	const gap = 200000 // ns between packets
	log := NewSendLog(1 << 16)
	for i := uint32(0); i < 1<<16; i++ {
		log.Record(i, 1200, int64(i)*gap)
	}
	var e Estimate
	var f header.FeedbackFields
	b.ReportAllocs()
	rates := 0
	for i := 0; b.Loop(); i++ {
		seq := uint32(i*8) & 0xffff
		if seq == 0 {
			e.Reset()
			f = header.FeedbackFields{}
		}
		f.ProbeSeq++
		f.HighestSeq, f.ReceivedAt, f.Timestamp = seq, int64(seq)*gap+5e6, int64(seq)*gap+5e6+1e5
		f.DeliveredBytes += 8 * 1200
		f.DeliveredPackets += 8
		if e.OnFeedback(int64(seq)*gap+1e7, f, log, false).HasRate {
			rates++
		}
	}
	if b.N > 10 && rates < b.N/2 {
		b.Fatalf("%d rate samples in %d feedbacks", rates, b.N)
	}
}
