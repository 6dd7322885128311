package bond

import (
	"net/netip"
	"time"

	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"
)

// rxLoop reads one socket of one path: control messages are answered here,
// data packets go to the reorder goroutine in batches.
func (e *Engine) rxLoop(p *enginePath, recv conn.ReceiveFunc) {
	defer e.wg.Done()
	bs := p.Uplink.BatchSize()
	pk := make([]*packet, bs)
	bufs := make([][]byte, bs)
	sizes := make([]int, bs)
	from := make([]netip.AddrPort, bs)
	var verifier *session.Verifier // this loop's, for handshakes (auth)
	if e.auth != nil {
		verifier = e.auth.hs.NewVerifier()
	}
	for i := range pk {
		pk[i] = e.packetPool.Get().(*packet)
		bufs[i] = pk[i].buf
	}
	defer func() {
		for _, x := range pk {
			e.packetPool.Put(x)
		}
	}()
	scratch := controlScratch(header.ControlEpochPacketLen)
	ctls := make([]header.ControlFields, 0, bs)
	fbs := make([]header.FeedbackFields, 0, bs)
	var repairSeqs []uint32 // asked for by the peer in this batch
	var repairs *repairOut
	for {
		clear(from) // set by a transport that strips the outer header: UDP, raw IPv6
		n, err := recv(bufs, sizes, from)
		if err != nil {
			if e.life.Closing() {
				return
			}
			e.log.Warn("uplink receive failed", "path", p.Name, "err", err)
			select {
			case <-e.life.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if e.life.Closing() {
			return // stopped: answer no more probes, so the peer sees the paths go down
		}
		now := e.now()
		batch := e.batchPool.Get().(*rxBatch)
		heard := false
		var udpFrom netip.AddrPort // the last sender over UDP of a packet that passed
		var dataBytes, dataPackets uint64
		var rxPackets, rxBytes uint64 // the path's counters, added once a batch
		var highest uint32
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				p.decode[header.ErrTruncated].Add(1)
				continue
			}
			d, ok := e.decode(p, bufs[i][:sizes[i]], from[i], verifier)
			if !ok {
				continue
			}
			heard = true
			if from[i].Port() != 0 {
				udpFrom = from[i]
			}
			if d.Kind == kindRefused { // it arrived: the feedback counts it, the TUN never sees it
				if dataPackets == 0 || int32(d.Seq-highest) > 0 {
					highest = d.Seq
				}
				dataPackets++
				if e.reorderBuf != nil {
					batch.items = append(batch.items, rxItem{pkt: refused, seq: d.Seq, path: p.idx})
				}
				continue
			}
			if d.Kind == encap.KindControl {
				c := header.Control(bufs[i][d.Off : d.Off+d.Len]).Fields()
				if c.Epoch != e.peerEpoch.Load() { // Epoch is 0 without epochs, as peerEpoch for such a peer
					if batch = e.newPeerEpoch(p, c, batch); batch == nil {
						return
					}
				}
				if c.HasEpochs {
					e.peerRepairs.Store(c.Repair)
				}
				if c.HasWatermark && e.reorderBuf != nil {
					batch.items = append(batch.items, rxItem{seq: c.Watermark, path: p.idx})
				}
				if c.Type == header.ControlFeedback {
					fbs = append(fbs, header.Feedback(bufs[i][d.Off:d.Off+d.Len]).Fields())
					continue
				}
				if c.Type == header.ControlRepair {
					if c.PeerEpoch == e.epoch && e.reorderBuf != nil { // about this start's sequences
						repairSeqs = header.Repair(bufs[i][d.Off : d.Off+d.Len]).AppendSeqs(repairSeqs)
						e.repairRxNs.Store(now.UnixNano())
					}
					continue
				}
				ctls = append(ctls, c)
				continue
			}
			rxPackets++
			rxBytes += uint64(d.Len)
			if dataPackets == 0 || int32(d.Seq-highest) > 0 {
				highest = d.Seq
			}
			dataPackets++
			dataBytes += uint64(d.Len)
			x := pk[i]
			x.off, x.n, x.seq, x.path = d.Off, d.Len, d.Seq, p.idx
			batch.items = append(batch.items, rxItem{pkt: x, seq: d.Seq, path: p.idx})
			pk[i] = e.packetPool.Get().(*packet)
			bufs[i] = pk[i].buf
		}
		if rxPackets > 0 {
			p.rxPackets.Add(rxPackets)
			p.rxBytes.Add(rxBytes)
		}
		if heard {
			p.lastRxNs.Store(now.UnixNano())
		}
		if udpFrom.IsValid() {
			if e.auth != nil {
				e.follow(p, udpFrom) // once a batch: the newest sender of what opened
			}
			if p.Transport == TransportAuto {
				if f, ok := p.Uplink.(fallback); ok && !f.OnUDP() {
					f.UseUDP("the peer sends over UDP") // the peer fell back, or runs udp
				}
			}
		}
		if len(batch.items) == 0 {
			e.batchPool.Put(batch)
		} else {
			select {
			case e.delivery <- batch:
			case <-e.life.Done():
				return
			}
		}
		// Replies leave after the watermarks above are queued: the peer
		// may start sending data on this path as soon as it has a reply,
		// and the reorder buffer must count the path by then.
		for _, c := range ctls {
			e.onControl(p, c, now, scratch)
		}
		ctls = ctls[:0]
		for _, f := range fbs {
			e.onFeedback(p, f, now)
		}
		fbs = fbs[:0]
		for k := 0; k < len(repairSeqs); k += header.RepairMax {
			if repairs == nil {
				repairs = newRepairOut()
			}
			e.onRepair(repairSeqs[k:min(k+header.RepairMax, len(repairSeqs))], repairs)
		}
		repairSeqs = repairSeqs[:0]
		if dataPackets > 0 && e.reorderBuf != nil {
			e.noteData(p, highest, dataBytes, dataPackets, now.UnixNano())
		}
	}
}

// newPeerEpoch records the peer's epoch from a control message that
// differs from the one known: the first heard, or a restart. The reorder
// goroutine hears of it before anything after it on any path: the batch so
// far (packets before the message) and the news go out now, under epochMu,
// before the new epoch is known to the other receive loops (and so before
// any reply tells the new peer a path is up). It returns the batch to go on
// with, nil if the engine stops.
func (e *Engine) newPeerEpoch(p *enginePath, c header.ControlFields, batch *rxBatch) *rxBatch {
	e.epochMu.Lock()
	defer e.epochMu.Unlock()
	old := e.peerEpoch.Load()
	if c.Epoch == old {
		return batch // another path's loop was first
	}
	item := rxItem{path: itemEpochs}
	if c.HasEpochs {
		item.seq = 1
	}
	if old != 0 {
		item.path = itemRestart
		e.Stats.PeerRestarts.Add(1)
		e.log.Warn("peer restarted", "path", p.Name, "old_epoch", epochString(old), "new_epoch", epochString(c.Epoch))
	}
	e.forgetLearning() // the counters on both sides start again
	if e.reorderBuf != nil {
		batch.items = append(batch.items, item)
		select {
		case e.delivery <- batch:
		case <-e.life.Done():
			return nil
		}
		batch = e.batchPool.Get().(*rxBatch)
	}
	e.peerEpoch.Store(c.Epoch)
	return batch
}

// onControl answers a probe, or takes the RTT from a reply.
func (e *Engine) onControl(p *enginePath, c header.ControlFields, now time.Time, scratch []byte) {
	p.peerTx.Store(c.TxPackets)
	switch c.Type {
	case header.ControlProbe:
		reply := e.controlFields(p, header.ControlReply)
		reply.ProbeSeq, reply.Timestamp = c.ProbeSeq, c.Timestamp
		e.sendControl(p, scratch, reply)
	case header.ControlReply:
		if c.HasEpochs && c.PeerEpoch != e.epoch {
			return // answers a probe of an earlier start of ours: the peer has not heard this one yet
		}
		rtt := now.Sub(time.Unix(0, c.Timestamp))
		if rtt < 0 || rtt > time.Minute {
			return // not one of our timestamps
		}
		p.mu.Lock()
		cameUp := p.health.onReply(now, rtt)
		p.rttNs.Store(int64(p.health.srtt))
		e.pathSet.SetDelay(p.idx, p.health.minRTT/2)
		e.pathSet.SetQueueUntil(p.idx, now.Add(rtt-p.health.minRTT))
		if cameUp {
			e.setState(p, true, now)
		}
		p.mu.Unlock()
		if c.Timestamp >= p.stalledAt.Load() { // probed since the stall began
			e.unstall(p, "keepalive reply")
		}
	}
}

func (e *Engine) controlFields(p *enginePath, typ uint8) header.ControlFields {
	return header.ControlFields{Type: typ, Watermark: e.sentUpTo.Load(), HasWatermark: e.reorderBuf != nil,
		Repair: e.offerRepair.Load(), TxPackets: p.txPackets.Load(), HasEpochs: true, Epoch: e.epoch, PeerEpoch: e.peerEpoch.Load()}
}

func (e *Engine) sendControl(p *enginePath, scratch []byte, f header.ControlFields) {
	header.EncodeControlPacket(scratch[encap.Headroom:], p.localAs4(), p.remote, f)
	if pkt := e.frameControl(scratch, header.IPv4HeaderLen+f.Len()); pkt != nil {
		e.sendRaw(p, pkt)
	}
}

// decode finds the inner packet or control message in a received packet,
// opened when sealed. A transport says how it came by from: not set, from
// a raw IPv4 socket, outer header included; set, without it (a raw IPv6
// socket's from has port 0, a UDP socket's the sender's port). A packet
// that fails is counted on p, by reason, and dropped: it touches nothing
// else.
func (e *Engine) decode(p *enginePath, pkt []byte, from netip.AddrPort, v *session.Verifier) (encap.Decoded, bool) {
	var d encap.Decoded
	var err error
	if from.IsValid() {
		if (e.auth == nil || from.Port() == 0) && from.Addr().Unmap() != p.Remote {
			p.decode[header.ErrWrongSource].Add(1) // only a sealed UDP path follows its peer; the others hear their remote only
			return d, false
		}
		d, err = e.gre.DecapPayload(pkt, p.remote)
	} else {
		d, err = e.codec.Decap(pkt, p.remote)
	}
	if err != nil {
		if de, ok := err.(header.DecodeError); ok && de < header.NumDecodeErrors { // unwrapped: no allocation per dropped packet
			p.decode[de].Add(1)
		}
		return d, false
	}
	switch {
	case d.Kind == encap.KindSealed && e.auth != nil:
		return e.openSealed(p, pkt, d, from, v)
	case d.Kind == encap.KindSealed || e.auth != nil:
		p.authDrops[dropNotSealed].Add(1)
		return d, false
	}
	return d, true
}
