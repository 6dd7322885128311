package bond

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/header"
)

// engineCollector exports the engine's atomic counters at scrape time, so
// the hot path never touches a Prometheus object.
type engineCollector struct {
	e *Engine
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("tunbond_"+name, help, labels, nil)
}

var (
	dPathTxPackets   = desc("path_tx_packets_total", "Packets sent on the path (tunnel packets, keepalives excluded).", "path")
	dPathTxBytes     = desc("path_tx_bytes_total", "Bytes sent on the path (tunnel header and payload).", "path")
	dPathRxPackets   = desc("path_rx_packets_total", "Data packets received on the path.", "path")
	dPathRxBytes     = desc("path_rx_bytes_total", "Inner bytes received on the path.", "path")
	dPathTxErrors    = desc("path_tx_errors_total", "Packets the uplink socket refused (link down, no route).", "path")
	dPathUp          = desc("path_up", "1 if the path answers keepalives and is in the scheduler.", "path")
	dPathRTT         = desc("path_rtt_seconds", "Smoothed keepalive round-trip time.", "path")
	dPathWeight      = desc("path_weight", "Scheduler weight.", "path")
	dPathPeerTx      = desc("path_peer_tx_packets", "Packets the peer says it sent on the path (compare with rx for loss).", "path")
	dPathChanges     = desc("path_state_changes_total", "Up/down transitions.", "path")
	dDecode          = desc("rx_dropped_total", "Received packets dropped, by reason.", "path", "reason")
	dTUNRxPackets    = desc("tun_rx_packets_total", "Packets read from the TUN.")
	dTUNRxBytes      = desc("tun_rx_bytes_total", "Bytes read from the TUN.")
	dTUNTxPackets    = desc("tun_tx_packets_total", "Packets written to the TUN.")
	dTUNTxBytes      = desc("tun_tx_bytes_total", "Bytes written to the TUN.")
	dNoPath          = desc("tx_no_path_total", "Packets dropped because no path was up.")
	dNotIP           = desc("tx_not_ip_total", "Packets from the TUN that were neither IPv4 nor IPv6 (mode l2: frames from the TAP shorter than an Ethernet header).")
	dTooBig          = desc("tx_too_big_total", "Frames from the TAP larger than its MTU and Ethernet header (mode l2): dropped, frames are never fragmented.")
	dTUNErrors       = desc("tun_errors_total", "TUN read and write errors.", "op")
	dRODepth         = desc("reorder_depth", "Packets held in the reorder buffer.")
	dROReleased      = desc("reorder_released_total", "Packets released in order.")
	dROHoles         = desc("reorder_holes_total", "Missing sequence numbers given up, by why: lost (every path moved past it), timeout, overflow (window full).", "reason")
	dROLate          = desc("reorder_late_total", "Packets dropped as older than what was already released (copies of what was handed on).")
	dROLateDelivered = desc("reorder_late_delivered_total", "Packets whose hole had been given up, handed on at once when they came after all (out of order, not lost).")
	dRODup           = desc("reorder_duplicate_total", "Duplicate packets dropped.")
	dROOverflow      = desc("reorder_overflow_released_total", "Packets released early because the window was full.")
	dROResync        = desc("reorder_resync_total", "Sequence restarts guessed from a jump back (a peer that sends no epochs restarted).")
	dROOutOfWindow   = desc("reorder_out_of_window_total", "Packets dropped as far outside the reorder window within one peer epoch (a bug or a forgery).")
	dPeerRestarts    = desc("peer_restarts_total", "Peer restarts, recognised by a new epoch in its keepalives.")
	dROWait          = desc("reorder_wait_seconds", "Time released packets spent in the reorder buffer.")
	dROSpurious      = desc("reorder_spurious_loss_total", "Holes given up as lost whose packet arrived after all (each widens the loss grace).")
	dROGrace         = desc("reorder_loss_grace_seconds", "Current adaptive wait for a hole every path has moved past.")
	dPathRate        = desc("path_learned_rate_bits_per_second", "Delivery rate learned from the receiver's feedback (inner bits/s, windowed max).", "path")
	dPathOWD         = desc("path_learned_owd_seconds", "Base one-way delay learned from feedback, above the fastest path's.", "path")
	dPathQueue       = desc("path_learned_queue_seconds", "The latest feedback's one-way queueing on the path.", "path")
	dPathLoss        = desc("path_learned_loss_ratio", "Smoothed packet loss on the path where it showed no queue.", "path")
	dPathStalled     = desc("path_stalled", "1 while the path's feedback has stopped under traffic (out of the scheduler, not yet down).", "path")
	dPathStalls      = desc("path_stalls_total", "Times the path's feedback stopped under traffic.", "path")
	dPathResent      = desc("path_resent_packets_total", "The path's packets re-sent on another path after a stall.", "path")
	dPathExcluded    = desc("path_excluded", "1 while the adaptive scheduler leaves the usable path out, by reason.", "path", "reason")
	dPathFeedback    = desc("path_feedback_total", "Feedback messages on the path, by direction (tx: about the peer's data; rx: about ours).", "path", "dir")
	dRedundant       = desc("tx_redundant_total", "Packets of the redundancy class also sent on a second path.")
	dSolo            = desc("single_link", "1 while the adaptive scheduler runs the bond on one link alone (the others left out).")
	dPathRepaired    = desc("path_repaired_packets_total", "The path's packets sent again because the peer found them lost and asked.", "path")
	dRepairAsked     = desc("repair_asked_total", "Lost packets this end asked the peer to send again.")
	dRepairResent    = desc("repair_resent_total", "Packets sent again because the peer asked.")
	dRepairMissed    = desc("repair_missed_total", "Packets the peer asked for that were no longer kept, or had no path up.")
	dRepairState     = desc("repair", "1 while repair is on, by side: offered (a path of ours loses packets of its own, the peer may ask), asking (the peer offers it; our reorder buffer asks for lost packets).", "side")
	dRORepaired      = desc("reorder_repaired_total", "Holes asked for again whose packet came in time to go in order.")
	dPathRoams       = desc("path_remote_changes_total", "Times a UDP path's remote moved to where authenticated packets came from (the peer's NAT mapping changed, or a remote learned).", "path")
	dPathWaiting     = desc("path_waiting", "1 while the path has no socket: its local address or device is missing (it joins when they appear).", "path")
	dSessions        = desc("auth_sessions_total", "Sessions agreed by a handshake (auth).")
	dNoSession       = desc("tx_no_session_total", "Packets not sent because no session was agreed yet (auth).")
	dROTimeout       = desc("reorder_timeout_seconds", "Current longest wait for a missing packet (reorder.timeout, raised to cover the paths' delay difference).")
)

func (c engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dPathTxPackets, dPathTxBytes, dPathRxPackets, dPathRxBytes, dPathTxErrors,
		dPathUp, dPathRTT, dPathWeight, dPathPeerTx, dPathChanges, dDecode, dTUNRxPackets, dTUNRxBytes, dTUNTxPackets,
		dTUNTxBytes, dNoPath, dNotIP, dTUNErrors, dRODepth, dROReleased, dROHoles, dROLate, dRODup, dROOverflow,
		dROResync, dROOutOfWindow, dPeerRestarts, dROWait, dROSpurious, dROGrace, dROTimeout,
		dPathRate, dPathOWD, dPathQueue, dPathLoss, dPathStalled, dPathStalls, dPathResent, dPathExcluded, dPathFeedback, dSolo, dRedundant, dROLateDelivered,
		dPathRepaired, dRepairAsked, dRepairResent, dRepairMissed, dRORepaired, dRepairState, dPathRoams, dSessions, dNoSession, dPathWaiting, dTooBig} {
		ch <- d
	}
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	e := c.e
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	for i, p := range e.paths {
		counter(dPathTxPackets, p.txPackets.Load(), p.Name)
		counter(dPathTxBytes, p.txBytes.Load(), p.Name)
		counter(dPathRxPackets, p.rxPackets.Load(), p.Name)
		counter(dPathRxBytes, p.rxBytes.Load(), p.Name)
		counter(dPathTxErrors, p.txErrors.Load(), p.Name)
		up := 0.0
		if p.upNow.Load() {
			up = 1
		}
		gauge(dPathUp, up, p.Name)
		gauge(dPathWaiting, b2f(p.waiting() != ""), p.Name)
		gauge(dPathRTT, float64(p.rttNs.Load())/1e9, p.Name)
		gauge(dPathWeight, float64(e.pathSet.Weight(i)), p.Name)
		gauge(dPathPeerTx, float64(p.peerTx.Load()), p.Name)
		counter(dPathChanges, p.changes.Load(), p.Name)
		gauge(dPathStalled, b2f(e.pathSet.Stalled(i)), p.Name)
		counter(dPathStalls, p.stalls.Load(), p.Name)
		counter(dPathResent, p.resent.Load(), p.Name)
		counter(dPathRepaired, p.repaired.Load(), p.Name)
		gauge(dPathExcluded, b2f(e.pathSet.Excluded(i) == path.ExcludedLossy), p.Name, path.ExcludedLossy.String())
		counter(dPathFeedback, p.feedbackTx.Load(), p.Name, "tx")
		counter(dPathFeedback, p.feedbackRx.Load(), p.Name, "rx")
		if l, ok := e.pathSet.Learned(i); ok {
			gauge(dPathRate, l.Rate*8, p.Name)
			gauge(dPathOWD, (l.BaseOWD - lowestOWD(e)).Seconds(), p.Name)
			gauge(dPathQueue, l.Queue.Seconds(), p.Name)
			gauge(dPathLoss, float64(l.LossPPM)/1e6, p.Name)
		}
		for r := header.DecodeError(1); r < header.NumDecodeErrors; r++ {
			counter(dDecode, p.decode[r].Load(), p.Name, r.Reason())
		}
		if e.auth != nil {
			for r := 1; r < int(numAuthDrops); r++ {
				if r != int(dropNoSession) {
					counter(dDecode, p.authDrops[r].Load(), p.Name, authDropReason(r))
				}
			}
		}
		if p.roam != nil {
			counter(dPathRoams, p.roams.Load(), p.Name)
		}
	}
	if e.auth != nil {
		counter(dSessions, e.auth.handshakes.Load())
		counter(dNoSession, e.auth.noSession.Load())
	}
	counter(dTUNRxPackets, e.Stats.TUNRxPackets.Load())
	counter(dTUNRxBytes, e.Stats.TUNRxBytes.Load())
	counter(dTUNTxPackets, e.Stats.TUNTxPackets.Load())
	counter(dTUNTxBytes, e.Stats.TUNTxBytes.Load())
	counter(dNoPath, e.Stats.NoPath.Load())
	counter(dNotIP, e.Stats.NotIP.Load())
	counter(dTooBig, e.Stats.TooBig.Load())
	counter(dTUNErrors, e.Stats.TUNReadErrors.Load(), "read")
	counter(dTUNErrors, e.Stats.TUNWriteErrors.Load(), "write")
	counter(dPeerRestarts, e.Stats.PeerRestarts.Load())
	gauge(dSolo, b2f(e.pathSet.Solo() >= 0))
	counter(dRedundant, e.Stats.Redundant.Load())
	counter(dRepairAsked, e.Stats.RepairAsked.Load())
	counter(dRepairResent, e.Stats.Repaired.Load())
	counter(dRepairMissed, e.Stats.RepairMissed.Load())
	gauge(dRepairState, b2f(e.offerRepair.Load()), "offered")
	gauge(dRepairState, b2f(e.repairAsking()), "asking")
	if s := e.ReorderStats(); s != nil {
		gauge(dRODepth, float64(s.Depth.Load()))
		counter(dROReleased, s.Released.Load())
		counter(dROHoles, s.HolesLost.Load(), "lost")
		counter(dROHoles, s.HolesTimeout.Load(), "timeout")
		counter(dROHoles, s.HolesOverflow.Load(), "overflow")
		counter(dROLate, s.Late.Load())
		counter(dROLateDelivered, s.LateDelivered.Load())
		counter(dRODup, s.Duplicate.Load())
		counter(dROOverflow, s.Overflow.Load())
		counter(dROResync, s.Resync.Load())
		counter(dROOutOfWindow, s.OutOfWindow.Load())
		counter(dROSpurious, s.Spurious.Load())
		counter(dRORepaired, s.Repaired.Load())
		gauge(dROGrace, float64(s.GraceNs.Load())/1e9)
		gauge(dROTimeout, float64(s.TimeoutNs.Load())/1e9)
		buckets, count, sum := s.Wait.Snapshot()
		ch <- prometheus.MustNewConstHistogram(dROWait, count, sum, buckets)
	}
}

// Collector exports the engine's metrics (tunbond_path_*, tunbond_tun_*,
// tunbond_tx_*, tunbond_rx_*, tunbond_reorder_*) for a Prometheus registry.
func (e *Engine) Collector() prometheus.Collector { return engineCollector{e} }

// lowestOWD is the least learned base one-way delay of the paths: the
// learned delays carry the clocks' offset, so only differences are shown.
func lowestOWD(e *Engine) time.Duration {
	var lo time.Duration
	for i := range e.paths {
		if l, ok := e.pathSet.Learned(i); ok && (lo == 0 || l.BaseOWD < lo) {
			lo = l.BaseOWD
		}
	}
	return lo
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
