package bond

import (
	"errors"
	"fmt"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"golang.zx2c4.com/wireguard/tun"
)

// txLoop reads batches from the TUN, picks a path per packet, prepends the
// tunnel header in the buffer's headroom and sends one batch per path.
func (e *Engine) txLoop() {
	defer e.wg.Done()
	bs := e.dev.BatchSize()
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	for i := range bufs {
		bufs[i] = make([]byte, e.bufLen)
	}
	out := make([][][]byte, len(e.paths))
	seqs := make([][]uint32, len(e.paths))
	lens := make([][]uint32, len(e.paths))
	for i := range out {
		out[i] = make([][]byte, 0, bs)
		seqs[i] = make([]uint32, 0, bs)
		lens[i] = make([]uint32, 0, bs)
	}
	// With auth, a redundant copy is sealed under its own counter, from a
	// plaintext copy in its own buffer: the same sealed bytes twice would
	// be a replay to the peer, dropped before its feedback counts the
	// path's delivery.
	var copies [][]byte
	if e.auth != nil && e.redundancy.on() {
		copies = make([][]byte, bs)
		for i := range copies {
			copies[i] = make([]byte, e.bufLen)
		}
	}
	for {
		// Read may return packets and an error together: the packets are
		// sent first, then the error counted (as wireguard-go's device does).
		n, err := e.dev.Read(bufs, sizes, encap.Headroom)
		for i := 0; i < n; i++ {
			e.Stats.TUNRxPackets.Add(1)
			e.Stats.TUNRxBytes.Add(uint64(sizes[i]))
			if e.gre.Frames && sizes[i] > e.cfg.MTU+header.EthernetHeaderLen {
				e.Stats.TooBig.Add(1) // a frame is never fragmented: it would not fit a path
				continue
			}
			inner := bufs[i][encap.Headroom : encap.Headroom+sizes[i]]
			p := e.sched.Pick(inner)
			if p < 0 {
				e.Stats.NoPath.Add(1)
				continue
			}
			// The class is read before sealing, which may encrypt the packet.
			red := e.redundancy.on() && e.redundant(inner)
			if red && copies != nil {
				copy(copies[i][encap.Headroom:], inner)
			}
			pkt := e.encapData(bufs[i], encap.Headroom, sizes[i], e.seq+1)
			if pkt == nil {
				if e.gre.PayloadType(inner) == 0 {
					e.Stats.NotIP.Add(1) // or, in l2 mode, not an Ethernet frame
				}
				continue
			}
			e.seq++
			out[p] = append(out[p], pkt)
			seqs[p] = append(seqs[p], e.seq)
			lens[p] = append(lens[p], uint32(sizes[i]))
			if red {
				if q := e.secondPath(p); q >= 0 { // the same packet, once more: the receiver keeps the first
					cp := pkt
					if copies != nil {
						if cp = e.encapData(copies[i], encap.Headroom, sizes[i], e.seq); cp == nil {
							continue
						}
					}
					out[q] = append(out[q], cp)
					seqs[q] = append(seqs[q], e.seq)
					lens[q] = append(lens[q], uint32(sizes[i]))
					e.Stats.Redundant.Add(1)
				}
			}
		}
		now := e.now().UnixNano()
		for i, batch := range out {
			if len(batch) == 0 {
				continue
			}
			e.sendData(e.paths[i], batch, seqs[i], lens[i], now)
			out[i], seqs[i], lens[i] = batch[:0], seqs[i][:0], lens[i][:0]
		}
		e.sentUpTo.Store(e.seq)
		if err != nil {
			if e.life.Closing() {
				return
			}
			e.Stats.TUNReadErrors.Add(1)
			if errors.Is(err, tun.ErrTooManySegments) {
				e.log.Debug("TUN read: packets of a multi-segment read dropped", "err", err)
				continue
			}
			// wireguard's tun fails this way once its device is gone (deleted,
			// or closed under the bond): nothing more will come.
			e.fail(fmt.Errorf("TUN read: %w (was the TUN device deleted?)", err))
			return
		}
	}
}

// sendData sends a batch of data packets on p. With seqs (their bond
// sequences) and sizes (their inner lengths), the packets are recorded in
// p's SendLog and kept for re-sending; a batch re-sent after a stall has
// neither.
func (e *Engine) sendData(p *enginePath, batch [][]byte, seqs, sizes []uint32, now int64) {
	if seqs != nil && p.tx.log != nil {
		p.estMu.Lock()
		for k, pkt := range batch {
			p.tx.log.Record(seqs[k], sizes[k], now)
			p.tx.keep.add(seqs[k], pkt)
		}
		if p.tx.firstUnfed == 0 {
			p.tx.firstUnfed = now
		}
		p.estMu.Unlock()
	}
	if now != 0 {
		p.lastDataNs.Store(now)
		if e.firstDataNs.Load() == 0 {
			e.firstDataNs.CompareAndSwap(0, now)
		}
	}
	if seqs == nil && e.auth != nil { // re-sent copies: the peer's replay window took their counters
		k := 0
		for _, pkt := range batch {
			if e.auth.reseal(pkt) {
				batch[k] = pkt
				k++
			}
		}
		batch = batch[:k]
	}
	sent, err := p.Uplink.Send(batch)
	var bytes uint64
	for _, b := range batch[:sent] {
		bytes += uint64(len(b))
	}
	p.txPackets.Add(uint64(sent))
	p.txBytes.Add(bytes)
	if err != nil {
		p.txErrors.Add(uint64(len(batch) - sent))
	}
}

// secondPath is the up, unstalled path other than p with the least RTT: for
// a packet sent twice, and for what a stalled path carried; -1 if none.
func (e *Engine) secondPath(p int) int {
	best := -1
	for i, q := range e.paths {
		if i == p || !q.upNow.Load() || e.pathSet.Stalled(i) || e.pathSet.Weight(i) == 0 {
			continue
		}
		if best < 0 || q.rttNs.Load() < e.paths[best].rttNs.Load() {
			best = i
		}
	}
	return best
}

// redundant reports whether a packet (in l2 mode, the IP packet inside the
// frame, or the frame by its size) is of the redundancy class.
func (e *Engine) redundant(p []byte) bool {
	if e.gre.Frames {
		ip := header.FramePayload(p)
		if ip == nil {
			return len(p) <= e.redundancy.maxSize
		}
		p = ip
	}
	return e.redundancy.matches(p)
}
