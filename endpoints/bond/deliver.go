package bond

import "time"

// reorderLoop owns the reorder buffer and writes released packets to the TUN.
func (e *Engine) reorderLoop() {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case b := <-e.rxq:
			now := e.now()
			for _, it := range b.items {
				switch {
				case it.pkt == nil:
					e.rb.Watermark(it.path, it.seq, now)
				case e.rb == nil:
					e.emit(it.pkt)
				case !e.rb.Push(it.seq, it.path, it.pkt, now):
					e.pool.Put(it.pkt)
				}
			}
			b.items = b.items[:0]
			e.bpool.Put(b)
		case <-timer.C:
			e.rb.Expire(e.now())
		case m := <-e.ctl:
			if m.path < 0 {
				e.rb.SetTimeout(m.timeout, e.now())
			} else {
				e.rb.SetActive(m.path, m.active, e.now())
			}
		case <-e.done:
			return
		}
		e.flushTUN()
		if e.rb != nil {
			if dl, ok := e.rb.Deadline(); ok {
				timer.Reset(max(dl.Sub(e.now()), 0))
			} else {
				timer.Stop()
			}
		}
	}
}

// emit copies a released packet into the TUN write batch.
func (e *Engine) emit(x *packet) {
	if e.wn == len(e.wbufs) {
		e.flushTUN()
	}
	n := copy(e.wbufs[e.wn][tunWriteOffset:], x.buf[x.off:x.off+x.n])
	e.wout[e.wn] = e.wbufs[e.wn][:tunWriteOffset+n]
	e.wn++
	e.pool.Put(x)
}

func (e *Engine) flushTUN() {
	if e.wn == 0 {
		return
	}
	var bytes uint64
	for _, b := range e.wout[:e.wn] {
		bytes += uint64(len(b) - tunWriteOffset)
	}
	if _, err := e.dev.Write(e.wout[:e.wn], tunWriteOffset); err != nil && !e.closed.Load() {
		e.Stats.TUNWriteErrors.Add(1)
		e.log.Debug("TUN write failed", "err", err)
	} else {
		e.Stats.TUNTxPackets.Add(uint64(e.wn))
		e.Stats.TUNTxBytes.Add(bytes)
	}
	e.wn = 0
}
