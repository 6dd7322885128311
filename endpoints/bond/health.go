package bond

import "time"

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
