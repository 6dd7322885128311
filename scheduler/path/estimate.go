package path

import (
	"time"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Windows of the learned estimates, as BBR's filters for one path: the
// delivery rate is the maximum over about 10 round trips, within
// [RateWindowMin, RateWindowMax] (RateWindowMax until an RTT is known); the
// base one-way delay and the least RTT are minimums over DelayWindow.
const (
	RateWindowRTTs = 10
	RateWindowMin  = 100 * time.Millisecond
	RateWindowMax  = time.Second
	DelayWindow    = 10 * time.Second
)

// minRateInterval is the shortest receiver interval a delivery rate sample
// is taken over: feedbacks closer than that (a burst read in one batch)
// are measured together with the next.
const minRateInterval = time.Millisecond

// Estimate is what the sender learns of one path from the receiver's
// feedback (header.Feedback) matched against its own SendLog: the delivery
// rate, the base one-way delay and the queueing above it, the RTT, and the
// packets lost. Time is passed in (the sender's clock, ns, as the log's
// send times); nothing in it reads a clock. Not safe for concurrent use.
//
// Delivery rate: the inner bytes the receiver counted between two
// feedbacks, over the receiver's interval between the arrivals of their
// highest sequences (on an in-order path the last arrival counted), or over
// the sender's interval between sending those two if longer (a burst
// compressed on the way cannot show more than was sent); the estimate is
// the windowed maximum. A sample the sender marks application-limited (it
// offered the path less than it could carry) only counts if it raises the
// maximum, so light traffic does not talk the path's rate down.
//
// One-way delay: `received at` minus the send time of that sequence, the
// path's delay plus the clocks' unknown offset; its windowed minimum is the
// base, and the latest sample's excess over it the queueing. RTT: the time
// from sending the highest sequence to the feedback's arrival, less the
// receiver's hold time (`timestamp` − `received at`).
type Estimate struct {
	fbSeq   uint32 // probe sequence of the latest feedback taken
	started bool   // a feedback was taken

	// the rate sample's start: the feedback it is measured from
	anchored     bool
	anchorRecvAt int64
	anchorBytes  uint64
	anchorSentAt int64 // send time of the anchor's highest sequence, if known
	anchorSent   bool

	rate   WindowedMax[float64] // bytes/s
	oneWay WindowedMin[int64]   // ns, with the clocks' offset
	minRTT WindowedMin[int64]   // ns

	latestOneWay int64
	latestRTT    int64
	srtt         int64
	lost         uint64
	lastFeedback int64
}

// Sample is what one feedback told.
type Sample struct {
	Rate        float64       // delivery rate, bytes/s, if HasRate
	HasRate     bool          //
	AppLimited  bool          // the rate sample was marked application-limited
	OneWay      time.Duration // received at − sent at (with the clocks' offset), if HasOneWay
	HasOneWay   bool          //
	RTT         time.Duration // if HasRTT
	HasRTT      bool          //
	Lost        uint64        // packets lost on the path so far, if HasLost
	HasLost     bool          //
	Stale       bool          // an older or repeated feedback, ignored
	SeqNotInLog bool          // the highest sequence is not (or no longer) in the SendLog
}

// Reset forgets everything learned (a new peer epoch). The zero Estimate
// knows nothing of its path.
func (e *Estimate) Reset() { *e = Estimate{} }

// OnFeedback takes feedback fb that arrived at now (sender's clock, ns) on
// the path whose packets log records. appLimited says the sender offered the
// path less than it could carry since the previous feedback.
func (e *Estimate) OnFeedback(now int64, fb header.FeedbackFields, log *SendLog, appLimited bool) Sample {
	var s Sample
	if e.started && int32(fb.ProbeSeq-e.fbSeq) <= 0 {
		s.Stale = true
		return s
	}
	e.started, e.fbSeq, e.lastFeedback = true, fb.ProbeSeq, now

	sent, inLog := log.Lookup(fb.HighestSeq)
	s.SeqNotInLog = !inLog
	if inLog {
		if hold := fb.Timestamp - fb.ReceivedAt; hold >= 0 {
			if rtt := now - sent.SentAt - hold; rtt > 0 {
				e.onRTT(now, rtt)
				s.RTT, s.HasRTT = time.Duration(rtt), true
			}
		}
		ow := fb.ReceivedAt - sent.SentAt
		e.latestOneWay = ow
		e.oneWay.Update(now, ow, int64(DelayWindow))
		s.OneWay, s.HasOneWay = time.Duration(ow), true
		e.lost = 0
		if sent.Packets > fb.DeliveredPackets {
			e.lost = sent.Packets - fb.DeliveredPackets
		}
		s.Lost, s.HasLost = e.lost, true
	}

	e.onDelivered(now, fb, sent, inLog, appLimited, &s)
	return s
}

func (e *Estimate) onRTT(now, rtt int64) {
	e.latestRTT = rtt
	if e.srtt == 0 {
		e.srtt = rtt
	} else {
		e.srtt += (rtt - e.srtt) / 8
	}
	e.minRTT.Update(now, rtt, int64(DelayWindow))
}

// onDelivered takes a delivery rate sample from the anchor to fb.
func (e *Estimate) onDelivered(now int64, fb header.FeedbackFields, sent SentPacket, inLog, appLimited bool, s *Sample) {
	if !e.anchored || fb.DeliveredBytes < e.anchorBytes || fb.ReceivedAt < e.anchorRecvAt {
		e.anchor(fb, sent, inLog) // the first feedback, or counters that went back
		return
	}
	delivered := fb.DeliveredBytes - e.anchorBytes
	if delivered == 0 {
		return // nothing arrived since: no sample, the anchor stays
	}
	interval := fb.ReceivedAt - e.anchorRecvAt
	if inLog && e.anchorSent {
		interval = max(interval, sent.SentAt-e.anchorSentAt)
	}
	if interval < int64(minRateInterval) {
		return // measured together with the next feedback
	}
	rate := float64(delivered) * 1e9 / float64(interval)
	e.anchor(fb, sent, inLog)
	s.Rate, s.HasRate, s.AppLimited = rate, true, appLimited
	if cur, ok := e.rate.Value(); appLimited && ok && rate < cur {
		return
	}
	e.rate.Update(now, rate, int64(e.rateWindow()))
}

func (e *Estimate) anchor(fb header.FeedbackFields, sent SentPacket, inLog bool) {
	e.anchored, e.anchorRecvAt, e.anchorBytes = true, fb.ReceivedAt, fb.DeliveredBytes
	e.anchorSentAt, e.anchorSent = sent.SentAt, inLog
}

// rateWindow is RateWindowRTTs least RTTs, within [RateWindowMin,
// RateWindowMax].
func (e *Estimate) rateWindow() time.Duration {
	r, ok := e.minRTT.Value()
	if !ok {
		return RateWindowMax
	}
	return min(max(time.Duration(r)*RateWindowRTTs, RateWindowMin), RateWindowMax)
}

// DeliveryRate is the path's delivery rate in inner bytes per second (the
// windowed maximum); ok is false before the first sample.
func (e *Estimate) DeliveryRate() (bytesPerSecond float64, ok bool) { return e.rate.Value() }

// BaseOneWay is the least one-way delay sample over DelayWindow: the path's
// delay without queueing plus the clocks' offset, so only differences
// between paths (to the same receiver) and over time mean anything.
func (e *Estimate) BaseOneWay() (time.Duration, bool) {
	v, ok := e.oneWay.Value()
	return time.Duration(v), ok
}

// QueueDelay is how much the latest one-way delay sample exceeds the base:
// the time the path's latest packet spent queued (0 before any sample).
func (e *Estimate) QueueDelay() time.Duration {
	v, ok := e.oneWay.Value()
	if !ok || e.latestOneWay < v {
		return 0
	}
	return time.Duration(e.latestOneWay - v)
}

// LatestRTT, SmoothedRTT (gain 1/8) and MinRTT (over DelayWindow) are the
// path's round trip, data one way and feedback back; 0 before a sample.
func (e *Estimate) LatestRTT() time.Duration   { return time.Duration(e.latestRTT) }
func (e *Estimate) SmoothedRTT() time.Duration { return time.Duration(e.srtt) }
func (e *Estimate) MinRTT() time.Duration {
	v, _ := e.minRTT.Value()
	return time.Duration(v)
}

// Lost is how many packets the path has lost so far, as of the latest
// feedback whose highest sequence was in the log.
func (e *Estimate) Lost() uint64 { return e.lost }

// LastFeedback is when (sender's clock, ns) the latest feedback was taken;
// 0 before the first.
func (e *Estimate) LastFeedback() int64 { return e.lastFeedback }
