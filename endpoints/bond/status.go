package bond

import (
	"context"
	"fmt"

	"github.com/tunbond/tunbond/reorder"
	"github.com/tunbond/tunbond/tunnel/header"
)

// PathUp reports whether the named path is up.
func (e *Engine) PathUp(name string) (bool, error) {
	p, err := e.path(name)
	if err != nil {
		return false, err
	}
	return p.upNow.Load(), nil
}

func (e *Engine) path(name string) (*enginePath, error) {
	for _, p := range e.paths {
		if p.Name == name {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no path named %q", name)
}

// WaitPath blocks until the named path is up (or down), or ctx ends.
func (e *Engine) WaitPath(ctx context.Context, name string, up bool) error {
	p, err := e.path(name)
	if err != nil {
		return err
	}
	for {
		e.stateMu.Lock()
		ch := e.stateCh
		e.stateMu.Unlock()
		if p.upNow.Load() == up {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("path %s still %s: %w", name, map[bool]string{true: "down", false: "up"}[up], ctx.Err())
		}
	}
}

// SetWeight changes a path's weight at run time.
func (e *Engine) SetWeight(name string, w uint32) error {
	p, err := e.path(name)
	if err != nil {
		return err
	}
	e.pathSet.SetWeight(p.idx, w)
	e.log.Info("path weight changed", "path", name, "weight", w)
	return nil
}

// PathStatus is a snapshot of one path, for the control socket and tests.
type PathStatus struct {
	Name      string  `json:"name"`
	Up        bool    `json:"up"`
	Weight    uint32  `json:"weight"`
	RTTMs     float64 `json:"rtt_ms"`
	TxPackets uint64  `json:"tx_packets"`
	TxBytes   uint64  `json:"tx_bytes"`
	RxPackets uint64  `json:"rx_packets"`
	RxBytes   uint64  `json:"rx_bytes"`
	TxErrors  uint64  `json:"tx_errors"`
	PeerTx    uint64  `json:"peer_tx_packets"`
	Changes   uint64  `json:"state_changes"`
	Dropped   uint64  `json:"rx_dropped"`
	// What the receiver's feedback taught (0 before the first), and what
	// the scheduler makes of the path.
	RateMbit     float64 `json:"learned_rate_mbit"`  // delivery rate, inner Mbit/s
	OneWayMs     float64 `json:"learned_owd_ms"`     // base one-way delay above the fastest path's
	QueueMs      float64 `json:"learned_queue_ms"`   // the latest one-way queueing
	LossPct      float64 `json:"learned_loss_pct"`   // smoothed loss where the path showed no queue
	Stalled      bool    `json:"stalled"`            // feedback stopped under traffic: out of the scheduler
	Excluded     string  `json:"excluded,omitempty"` // why the adaptive scheduler leaves it out (lossy)
	Stalls       uint64  `json:"stalls"`             // times its feedback stopped under traffic
	Resent       uint64  `json:"resent_packets"`     // its packets re-sent on another path after a stall
	Repaired     uint64  `json:"repaired_packets"`   // its packets sent again because the peer found them lost
	FeedbackSent uint64  `json:"feedback_tx"`        // feedback messages sent on it
	FeedbackRcvd uint64  `json:"feedback_rx"`        // feedback messages taken from it
	// A udp path's remote as it stands (learned, or moved with the peer's
	// NAT), and how often it moved; "" and 0 on a raw path.
	Remote string `json:"remote,omitempty"`
	// Waiting says why the path has no socket (its address or device is
	// missing); "" once it has one.
	Waiting string `json:"waiting,omitempty"`
	// Transport is gre, udp, or for auto what it sends over now: "auto:
	// gre", "auto: udp".
	Transport string `json:"transport,omitempty"`
	// DroppedBy counts the received packets dropped, by reason (the
	// reasons of tunbond_rx_dropped_total); only reasons seen.
	DroppedBy     map[string]uint64 `json:"rx_dropped_by,omitempty"`
	RemoteChanges uint64            `json:"remote_changes,omitempty"`
}

// Status returns a snapshot of every path.
func (e *Engine) Status() []PathStatus {
	out := make([]PathStatus, len(e.paths))
	lo := lowestOWD(e)
	for i, p := range e.paths {
		var dropped uint64
		by := map[string]uint64{}
		for j := header.DecodeError(1); j < header.NumDecodeErrors; j++ {
			if n := p.decode[j].Load(); n > 0 {
				dropped += n
				by[j.Reason()] = n
			}
		}
		for j := 1; j < int(numAuthDrops); j++ {
			if n := p.authDrops[j].Load(); n > 0 {
				dropped += n
				by[authDropReason(j)] = n
			}
		}
		out[i] = PathStatus{Name: p.Name, Up: p.upNow.Load(), Weight: e.pathSet.Weight(i),
			RTTMs:     float64(p.rttNs.Load()) / 1e6,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(), TxErrors: p.txErrors.Load(),
			PeerTx: p.peerTx.Load(), Changes: p.changes.Load(), Dropped: dropped,
			Stalled: e.pathSet.Stalled(i), Excluded: e.pathSet.Excluded(i).String(), Stalls: p.stalls.Load(),
			Resent: p.resent.Load(), Repaired: p.repaired.Load(), FeedbackSent: p.feedbackTx.Load(), FeedbackRcvd: p.feedbackRx.Load()}
		out[i].Waiting = p.waiting()
		out[i].Transport = p.Transport
		if f, ok := p.Uplink.(fallback); ok && p.Transport == TransportAuto {
			out[i].Transport = map[bool]string{false: "auto: gre", true: "auto: udp"}[f.OnUDP()]
		}
		if len(by) > 0 {
			out[i].DroppedBy = by
		}
		if p.roam != nil {
			if r := p.roam.Remote(); r.IsValid() {
				out[i].Remote = r.String()
			} else {
				out[i].Remote = "(learning)"
			}
			out[i].RemoteChanges = p.roams.Load()
		}
		if l, ok := e.pathSet.Learned(i); ok {
			out[i].RateMbit, out[i].OneWayMs = l.Rate*8/1e6, float64(l.BaseOWD-lo)/1e6
			out[i].QueueMs, out[i].LossPct = float64(l.Queue)/1e6, float64(l.LossPPM)/1e4
		}
	}
	return out
}

// Solo names the one path the adaptive scheduler runs the bond on, having
// left every other usable path out, or "".
func (e *Engine) Solo() string {
	if i := e.pathSet.Solo(); i >= 0 {
		return e.paths[i].Name
	}
	return ""
}

// ReorderStats returns the reorder buffer's counters, or nil with IPIP.
func (e *Engine) ReorderStats() *reorder.Stats {
	if e.reorderBuf == nil {
		return nil
	}
	return &e.reorderBuf.Stats
}

// Sessions is how many sessions handshakes agreed (auth), 0 without auth.
func (e *Engine) Sessions() uint64 {
	if e.auth == nil {
		return 0
	}
	return e.auth.handshakes.Load()
}

// waiting is why the path has no socket, "" if it has one (or cannot
// lose it: an uplink that is not a slot).
func (p *enginePath) waiting() string {
	if w, ok := p.Uplink.(interface{ Waiting() string }); ok {
		return w.Waiting()
	}
	return ""
}
