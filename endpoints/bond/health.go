package bond

import (
	"fmt"
	"time"

	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/header"
)

// pathHealth decides whether a path is up from the replies to its
// keepalive probes. It is pure: the caller passes the time.
type pathHealth struct {
	interval  time.Duration
	misses    int
	up        bool
	lastReply time.Time
	replied   bool
	srtt      time.Duration // smoothed RTT (RFC 6298 weights)
	minRTT    time.Duration // least RTT over minRTTWindow: the path without queueing
	minAt     time.Time
}

// minRTTWindow is how long a least RTT is trusted before a newer sample
// may replace it (a path's route can change).
const minRTTWindow = 30 * time.Second

// onReply records a reply that took rtt. It returns true if the path comes up.
func (h *pathHealth) onReply(now time.Time, rtt time.Duration) (cameUp bool) {
	h.lastReply, h.replied = now, true
	if h.minRTT == 0 || rtt <= h.minRTT || now.Sub(h.minAt) > minRTTWindow {
		h.minRTT, h.minAt = rtt, now
	}
	if h.srtt == 0 {
		h.srtt = rtt
	} else {
		h.srtt = (7*h.srtt + rtt) / 8
	}
	if !h.up {
		h.up = true
		return true
	}
	return false
}

// check returns true if the path goes down: up, and no reply for
// interval × misses.
func (h *pathHealth) check(now time.Time) (wentDown bool) {
	if h.up && now.Sub(h.lastReply) > h.interval*time.Duration(h.misses) {
		h.up = false
		return true
	}
	return false
}

// setState records a path going up or down; p.mu is held.
func (e *Engine) setState(p *enginePath, up bool, now time.Time) {
	e.pathSet.SetUp(p.idx, up) // the scheduler first: once upNow says down, nothing new goes there
	p.upNow.Store(up)
	if up && e.firstUpNs.Load() == 0 {
		e.firstUpNs.Store(now.UnixNano())
	}
	p.changes.Add(1)
	if up {
		e.log.Info("path up", "path", p.Name, "rtt", time.Duration(p.rttNs.Load()).Round(10*time.Microsecond))
	} else {
		e.log.Warn("path down", "path", p.Name, "silent_for", now.Sub(p.health.lastReply).Round(time.Millisecond))
	}
	e.stateMu.Lock()
	close(e.stateCh)
	e.stateCh = make(chan struct{})
	e.stateMu.Unlock()
}

// healthLoop probes every path each interval and takes silent paths down.
func (e *Engine) healthLoop() {
	defer e.wg.Done()
	scratch := controlScratch(header.FeedbackPacketLen)
	t := time.NewTicker(e.cfg.Keepalive)
	defer t.Stop()
	started := e.now()
	for {
		now := e.now()
		if e.auth != nil {
			e.handshakeDue()
		}
		e.autoFallBack(now, started)
		for _, p := range e.paths {
			p.mu.Lock()
			if p.health.check(now) {
				e.setState(p, false, now)
			}
			p.mu.Unlock()
			e.checkSilence(p, now)
			e.probe(p, scratch)
			// An idle path's feedback goes with its keepalives.
			p.fbMu.Lock()
			idle := now.UnixNano()-p.rx.lastSent >= int64(e.cfg.Keepalive)/2
			p.fbMu.Unlock()
			if idle {
				e.sendFeedback(p, now.UnixNano(), scratch)
			}
		}
		e.followDelaySkew()
		e.logExclusions()
		select {
		case <-t.C:
		case <-e.life.Done():
			return
		}
	}
}

// probe sends a keepalive probe on p.
func (e *Engine) probe(p *enginePath, scratch []byte) {
	p.mu.Lock()
	p.probeSeq++
	f := e.controlFields(p, header.ControlProbe)
	f.ProbeSeq, f.Timestamp = p.probeSeq, e.now().UnixNano()
	p.mu.Unlock()
	e.sendControl(p, scratch, f)
}

// delaySkewAdvice returns a warning when rr or wrr spreads flows over paths
// whose base one-way delays differ by more than 10 ms, or "".
func delaySkewAdvice(scheduler string, delays []time.Duration) string {
	if (scheduler != "rr" && scheduler != "wrr") || len(delays) < 2 {
		return ""
	}
	lo, hi := delays[0], delays[0]
	for _, d := range delays {
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo <= 10*time.Millisecond {
		return ""
	}
	return fmt.Sprintf("the paths' one-way delays differ by %v: %s spreads every flow over all of them, so TCP sees an RTT "+
		"that jumps between the paths and grows slowly (the lab measured 20 Mbit/s over fibre + LTE where scheduler: delay "+
		"reached 296); use scheduler: delay, with weights set to the uplinks' rates in Mbit/s", (hi - lo).Round(time.Millisecond), scheduler)
}

// followDelaySkew gives the scheduler advice above once, and sets the
// reorder timeout to cover the delay difference between the up paths:
// skew × 1.5 + 10 ms, and the repair wait (with repair), never below the
// configured one. The timeout moves
// only when the target differs by more than an eighth.
func (e *Engine) followDelaySkew() {
	if e.reorderBuf == nil {
		return
	}
	lo, hi, n := time.Duration(0), time.Duration(0), 0
	for _, p := range e.paths {
		if !p.upNow.Load() {
			continue
		}
		owd := time.Duration(p.rttNs.Load()) / 2
		if n == 0 || owd < lo {
			lo = owd
		}
		hi = max(hi, owd)
		n++
	}
	if !e.warned {
		var base []time.Duration
		for i, p := range e.paths {
			if p.upNow.Load() {
				base = append(base, e.pathSet.Delay(i))
			}
		}
		if msg := delaySkewAdvice(e.cfg.Scheduler, base); msg != "" {
			e.warned = true
			e.log.Warn(msg, "scheduler", e.cfg.Scheduler)
		}
	}
	want := e.cfg.Reorder.Timeout
	if n > 1 {
		want = max(want, (hi-lo)*3/2+10*time.Millisecond)
	}
	// With repair, a hole is worth holding for the repair's round trip
	// (queueing included): given up sooner, the inner flow sees a loss.
	want = max(want, time.Duration(e.repairAt.Load()))
	want = min(want, 10*time.Second)
	if !e.cfg.AdaptiveTimeout {
		return
	}
	// The buffer's own timeout: the reorder goroutine raises it at once
	// when repair begins to ask.
	cur := time.Duration(e.reorderBuf.Stats.TimeoutNs.Load())
	if d := want - cur; d.Abs() <= cur/8 {
		return
	}
	e.log.Info("reorder timeout follows the paths' delay difference", "timeout", want.Round(time.Millisecond), "skew", (hi - lo).Round(time.Millisecond))
	select {
	case e.reorderChanges <- reorderChange{path: changeTimeout, timeout: want}:
	case <-e.life.Done():
	}
}

// followRepair offers repair to the peer while a path of ours loses
// packets of its own, and, while the peer offers it, sets the repair wait
// from the paths' least RTT (when it moves by more than an eighth; 0 turns
// asking off). It runs with the stall checks, every 5 ms: a loss-based
// inner flow that meets a loss in slow start leaves it for good.
func (e *Engine) followRepair() {
	if e.reorderBuf == nil || !e.cfg.Repair {
		return
	}
	// Until a path has shown itself clean on repairEvidence packets (for
	// at most repairStartup from the first data), repair is offered: a
	// cubic flow that meets an unrepaired loss in slow start leaves it for
	// good, and a lossy path's loss is learned on fewer packets than that.
	first := e.firstDataNs.Load()
	starting := first == 0 || e.now().UnixNano()-first < int64(repairStartup)
	clean := false
	var most, least uint32 // the up paths' learned own loss
	up := 0
	for i, p := range e.paths {
		if !p.upNow.Load() {
			continue
		}
		l, _ := e.pathSet.Learned(i)
		if up == 0 || l.LossPPM < least {
			least = l.LossPPM
		}
		most = max(most, l.LossPPM)
		up++
		if l.LossPPM < path.LossyPPM && p.lossObserved.Load() >= repairEvidence {
			clean = true
		}
	}
	// A path loses of its own when it loses path.LossyPPM where another
	// loses under a quarter of that (or it is alone): loss that every path
	// shows alike is the flows' congestion, which the estimate's queue test
	// lets through at times (BBR on the symmetric profile, with the other
	// path no better, had repair on and 25727 repairs).
	if up == 1 {
		least = 0 // alone: judged by its own loss only
	}
	lossy := path.LossyAgainst(most, least, path.LossyPPM)
	offer := lossy || starting && !clean
	// The lossy trial counts on repair only while the peer does ask (an
	// older peer, or one with reorder.repair off, never does).
	e.pathSet.SetRepaired(offer && e.now().UnixNano()-e.repairRxNs.Load() < int64(time.Second))
	if e.offerRepair.Swap(offer) != offer {
		why := "no path loses 0.2% of its own more than 4 times the cleanest"
		switch {
		case lossy:
			why = "a path loses 0.2% of its own (where it shows no queue), 4 times the cleanest"
		case offer:
			why = "starting: no path has shown itself clean yet"
		}
		e.log.Info("repair offered to the peer", "offered", offer, "why", why)
	}
	want := time.Duration(0)
	if rtt := e.repairRTT(); rtt > 0 && e.peerRepairs.Load() {
		want = repairWait(rtt)
	}
	at := time.Duration(e.repairAt.Load())
	if d := want - at; d.Abs() <= at/8 && (want == 0) == (at == 0) {
		return
	}
	e.repairAt.Store(int64(want))
	select {
	case e.reorderChanges <- reorderChange{path: changeRepair, timeout: want}:
	case <-e.life.Done():
	}
}

// logExclusions says when the adaptive scheduler leaves a path out or
// takes it back, and when it runs the bond on one link alone.
func (e *Engine) logExclusions() {
	for i, p := range e.paths {
		x := e.pathSet.Excluded(i)
		if x == p.excludedSeen {
			continue
		}
		p.excludedSeen = x
		l, _ := e.pathSet.Learned(i)
		if x == path.Included {
			e.log.Info("path back in use", "path", p.Name, "learned_loss_pct", float64(l.LossPPM)/1e4)
		} else {
			e.log.Info("path left out", "path", p.Name, "why", x.String(), "learned_loss_pct", float64(l.LossPPM)/1e4)
		}
	}
	if solo := e.Solo(); solo != e.soloSeen {
		e.soloSeen = solo
		if solo != "" {
			e.log.Info("the bond runs on one link alone", "path", solo)
		}
	}
}

// checkSilence takes a path out of fast loss detection when nothing has
// come from the peer on it for interval × misses (what it hears, not whether
// its own probes are answered: the peer may still be sending on it). The
// reorder buffer puts it back by itself when anything arrives on it.
func (e *Engine) checkSilence(p *enginePath, now time.Time) {
	if e.reorderBuf == nil {
		return
	}
	silent := now.UnixNano()-p.lastRxNs.Load() > int64(e.cfg.Keepalive)*int64(e.cfg.Misses)
	if silent == !p.rxActive {
		return
	}
	p.rxActive = !silent
	if silent {
		select {
		case e.reorderChanges <- reorderChange{path: p.idx}:
		case <-e.life.Done():
		}
	}
}

// autoFallBack sends an auto path that never came up over UDP when another
// path has been up for autoFallback (the peer answers there, not here), or
// when no path has come up in autoAlone since the start: a peer that is
// down, or slow to start, does not make a path fall back, unless it stays
// away long enough that raw GRE may be blocked on every path.
func (e *Engine) autoFallBack(now, started time.Time) {
	first := e.firstUpNs.Load()
	var why string
	switch {
	case first != 0 && now.UnixNano()-first >= int64(autoFallback):
		why = "no answer over raw GRE in " + autoFallback.String() + " while another path is up (a NAT, or a firewall dropping IP protocol 47, on the way?)"
	case first == 0 && now.Sub(started) >= autoAlone:
		why = "no answer at all in " + autoAlone.String() + " (raw GRE blocked on every path?)"
	default:
		return
	}
	for _, p := range e.paths {
		if f, ok := p.Uplink.(fallback); ok && p.changes.Load() == 0 && !f.OnUDP() {
			f.UseUDP(why)
		}
	}
}
