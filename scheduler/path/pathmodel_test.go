package path

import (
	"math/rand/v2"
	"time"

	"github.com/tunbond/tunbond/tunnel/header"
)

// modelPath is a pure model of one uplink for the estimators' tests: a
// drop-tail queue drained at rate bytes/s, then delay ns one way (FIFO: a
// packet never overtakes one sent before it), random loss; the receiver at
// its end, whose clock is offset ns ahead of the sender's, sends a feedback
// every feedbackEvery ns that takes back ns to return. Times are the
// sender's clock, ns.
type modelPath struct {
	rate          float64 // bytes/s
	delay         int64
	back          int64
	queueLimit    float64 // bytes
	loss          float64
	offset        int64
	feedbackEvery int64
	rng           *rand.Rand

	linkFree   int64 // when the link has serialized all it accepted
	lastArrive int64
	inFlight   []modelPacket

	// the receiver
	highest   uint32
	recvAt    int64 // receiver's clock
	bytes     uint64
	packets   uint64
	fbSeq     uint32
	nextFb    int64
	feedbacks []modelFeedback

	dropped []uint32 // sequences lost, in send order
}

type modelPacket struct {
	seq    uint32
	size   uint32
	arrive int64
}

type modelFeedback struct {
	arrive int64
	f      header.FeedbackFields
}

func newModelPath(mbit float64, delay, back time.Duration, queue time.Duration) *modelPath {
	rate := mbit * 1e6 / 8
	return &modelPath{rate: rate, delay: int64(delay), back: int64(back), queueLimit: rate * queue.Seconds(),
		offset: int64(-7*time.Second + 123456789), feedbackEvery: int64(10 * time.Millisecond), rng: rand.New(rand.NewPCG(8, 9))}
}

// send puts a packet on the link at now.
func (m *modelPath) send(now int64, seq, size uint32) {
	if m.loss > 0 && m.rng.Float64() < m.loss {
		m.dropped = append(m.dropped, seq)
		return
	}
	if backlog := float64(m.linkFree-now) * m.rate / 1e9; backlog+float64(size) > m.queueLimit {
		m.dropped = append(m.dropped, seq)
		return
	}
	done := max(now, m.linkFree) + int64(float64(size)*1e9/m.rate)
	m.linkFree = done
	arrive := max(done+m.delay, m.lastArrive)
	m.lastArrive = arrive
	m.inFlight = append(m.inFlight, modelPacket{seq, size, arrive})
}

// modelSender drives a modelPath: it offers bytes/s in packets of size,
// takes bond sequences with gaps (the other paths' packets), records them in
// its SendLog and takes the feedback into its Estimate.
type modelSender struct {
	path       *modelPath
	log        *SendLog
	est        Estimate
	now        int64
	offered    float64 // bytes/s
	appLimited bool
	size       uint32
	seq        uint32
	nextSend   int64
	rng        *rand.Rand
	onSample   func(now int64, s Sample)
	lastFb     header.FeedbackFields // the latest feedback taken
}

func newModelSender(p *modelPath, offeredMbit float64) *modelSender {
	return &modelSender{path: p, log: NewSendLog(1 << 14), offered: offeredMbit * 1e6 / 8, size: 1200,
		seq: 0xffffff00, rng: rand.New(rand.NewPCG(3, 4))} // sequences wrap during the run
}

// run simulates until the sender's clock reaches until, event by event.
func (s *modelSender) run(until time.Duration) {
	end := int64(until)
	p := s.path
	for {
		next, what := s.nextSend, 0
		if len(p.inFlight) > 0 && p.inFlight[0].arrive < next {
			next, what = p.inFlight[0].arrive, 1
		}
		if p.nextFb < next {
			next, what = p.nextFb, 2
		}
		if len(p.feedbacks) > 0 && p.feedbacks[0].arrive < next {
			next, what = p.feedbacks[0].arrive, 3
		}
		if next > end {
			s.now = end
			return
		}
		s.now = next
		switch what {
		case 0:
			s.seq += 1 + uint32(s.rng.IntN(3))
			s.log.Record(s.seq, s.size, s.now)
			p.send(s.now, s.seq, s.size)
			s.nextSend += int64(float64(s.size) * 1e9 / s.offered)
		case 1:
			pkt := p.inFlight[0]
			p.inFlight = p.inFlight[1:]
			if p.packets == 0 || int32(pkt.seq-p.highest) > 0 {
				p.highest, p.recvAt = pkt.seq, pkt.arrive+p.offset
			}
			p.bytes += uint64(pkt.size)
			p.packets++
		case 2:
			p.nextFb += p.feedbackEvery
			if p.packets == 0 {
				continue
			}
			p.fbSeq++
			f := header.FeedbackFields{ControlFields: header.ControlFields{ProbeSeq: p.fbSeq, Timestamp: s.now + p.offset,
				HasEpochs: true, Epoch: 1, PeerEpoch: 2},
				HighestSeq: p.highest, ReceivedAt: p.recvAt, DeliveredBytes: p.bytes, DeliveredPackets: p.packets}
			p.feedbacks = append(p.feedbacks, modelFeedback{s.now + p.back, f})
		case 3:
			fb := p.feedbacks[0]
			p.feedbacks = p.feedbacks[1:]
			// What the engine does: the message goes over the wire.
			var b [header.FeedbackLen]byte
			fb.f.Encode(header.Feedback(b[:]))
			if err := header.Feedback(b[:]).Validate(); err != nil {
				panic(err)
			}
			f := header.Feedback(b[:]).Fields()
			sm := s.est.OnFeedback(s.now, f, s.log, s.appLimited)
			s.lastFb = f
			if s.onSample != nil {
				s.onSample(s.now, sm)
			}
		}
	}
}

// lostUpTo is how many packets the model dropped with a sequence up to seq.
func (m *modelPath) lostUpTo(seq uint32) uint64 {
	var n uint64
	for _, d := range m.dropped {
		if int32(d-seq) <= 0 {
			n++
		}
	}
	return n
}
