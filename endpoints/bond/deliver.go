package bond

import "time"

// reorderLoop owns the reorder buffer and writes released packets to the TUN.
func (e *Engine) reorderLoop() {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case b := <-e.delivery:
			now := e.now()
			for _, it := range b.items {
				switch {
				case it.path == itemRestart:
					e.reorderBuf.Reset(now)
					e.repairSeqs = e.repairSeqs[:0] // the old peer's sequences
					e.reorderBuf.SetStrict(it.seq != 0)
				case it.path == itemEpochs:
					e.reorderBuf.SetStrict(it.seq != 0)
				case it.pkt == nil:
					e.reorderBuf.Watermark(it.path, it.seq, now)
				case e.reorderBuf == nil:
					e.emit(it.pkt)
				case !e.reorderBuf.Push(it.seq, it.path, it.pkt, now):
					if it.pkt != refused {
						e.packetPool.Put(it.pkt)
					}
				}
			}
			b.items = b.items[:0]
			e.batchPool.Put(b)
		case <-timer.C:
			e.reorderBuf.Expire(e.now())
		case m := <-e.reorderChanges:
			switch m.path {
			case changeTimeout:
				e.reorderBuf.SetTimeout(m.timeout, e.now())
			case changeRepair:
				// The health goroutine raises the timeout to the wait at its
				// next round (and lowers it when repair stops); until then
				// the wait is not cut short. A fixed timeout bounds the wait.
				if w := min(m.timeout, 10*time.Second); e.cfg.AdaptiveTimeout && w > e.reorderBuf.Timeout() {
					e.reorderBuf.SetTimeout(w, e.now())
				}
				e.reorderBuf.SetRepair(m.timeout, e.askRepair)
			default:
				e.reorderBuf.SetActive(m.path, m.active, e.now())
			}
		case <-e.life.Done():
			return
		}
		e.flushTUN()
		e.sendRepairs()
		if e.reorderBuf != nil {
			if dl, ok := e.reorderBuf.Deadline(); ok {
				timer.Reset(max(dl.Sub(e.now()), 0))
			} else {
				timer.Stop()
			}
		}
	}
}

// refused stands in the reorder buffer for an authentic data packet the
// policy refused (auth.allowed_sources): its sequence is filled, so no hole
// is waited for or asked to be repaired, and nothing reaches the TUN.
var refused = &packet{}

// emit copies a released packet into the TUN write batch.
func (e *Engine) emit(x *packet) {
	if x == refused {
		return
	}
	if e.tunBatchLen == len(e.tunBufs) {
		e.flushTUN()
	}
	n := copy(e.tunBufs[e.tunBatchLen][tunWriteOffset:], x.buf[x.off:x.off+x.n])
	e.tunBatch[e.tunBatchLen] = e.tunBufs[e.tunBatchLen][:tunWriteOffset+n]
	e.tunBatchLen++
	e.packetPool.Put(x)
}

func (e *Engine) flushTUN() {
	if e.tunBatchLen == 0 {
		return
	}
	var bytes uint64
	for _, b := range e.tunBatch[:e.tunBatchLen] {
		bytes += uint64(len(b) - tunWriteOffset)
	}
	if _, err := e.dev.Write(e.tunBatch[:e.tunBatchLen], tunWriteOffset); err != nil && !e.life.Closing() {
		e.Stats.TUNWriteErrors.Add(1)
		e.log.Debug("TUN write failed", "err", err)
	} else {
		e.Stats.TUNTxPackets.Add(uint64(e.tunBatchLen))
		e.Stats.TUNTxBytes.Add(bytes)
	}
	e.tunBatchLen = 0
}
