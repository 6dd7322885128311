package bond

import (
	"context"
	"fmt"

	"github.com/tunbond/tunbond/reorder"
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
}

// Status returns a snapshot of every path.
func (e *Engine) Status() []PathStatus {
	out := make([]PathStatus, len(e.paths))
	for i, p := range e.paths {
		var dropped uint64
		for j := range p.decode {
			dropped += p.decode[j].Load()
		}
		out[i] = PathStatus{Name: p.Name, Up: p.upNow.Load(), Weight: e.pathSet.Weight(i),
			RTTMs:     float64(p.rttNs.Load()) / 1e6,
			TxPackets: p.txPackets.Load(), TxBytes: p.txBytes.Load(),
			RxPackets: p.rxPackets.Load(), RxBytes: p.rxBytes.Load(), TxErrors: p.txErrors.Load(),
			PeerTx: p.peerTx.Load(), Changes: p.changes.Load(), Dropped: dropped}
	}
	return out
}

// ReorderStats returns the reorder buffer's counters, or nil with IPIP.
func (e *Engine) ReorderStats() *reorder.Stats {
	if e.reorderBuf == nil {
		return nil
	}
	return &e.reorderBuf.Stats
}
