package bond

import (
	"errors"
	"fmt"

	"github.com/tunbond/tunbond/tunnel/encap"
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
	for i := range out {
		out[i] = make([][]byte, 0, bs)
	}
	for {
		// Read may return packets and an error together: the packets are
		// sent first, then the error counted (as wireguard-go's device does).
		n, err := e.dev.Read(bufs, sizes, encap.Headroom)
		for i := 0; i < n; i++ {
			e.Stats.TUNRxPackets.Add(1)
			e.Stats.TUNRxBytes.Add(uint64(sizes[i]))
			p := e.sched.Pick(bufs[i][encap.Headroom : encap.Headroom+sizes[i]])
			if p < 0 {
				e.Stats.NoPath.Add(1)
				continue
			}
			pkt := e.codec.EncapData(bufs[i], encap.Headroom, sizes[i], e.seq+1)
			if pkt == nil {
				e.Stats.NotIP.Add(1)
				continue
			}
			e.seq++
			out[p] = append(out[p], pkt)
		}
		for i, batch := range out {
			if len(batch) == 0 {
				continue
			}
			e.sendData(e.paths[i], batch)
			out[i] = batch[:0]
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

func (e *Engine) sendData(p *enginePath, batch [][]byte) {
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
