package session

// Drop is why a received sealed or handshake packet was dropped. Its values
// index the per-reason drop counters, so they are small and dense.
type Drop uint8

const (
	DropTooShort     Drop = iota + 1 // shorter than a sealed header and tag
	DropUnknownIndex                 // receiver index of no session we hold
	DropBadTag                       // the tag does not verify
	DropReplayed                     // counter already seen inside the window
	DropTooOld                       // counter behind the window
	DropCounterLimit                 // counter at or past RejectAfterMessages
	DropMalformed                    // authentic framing, bad handshake message
	DropStale                        // init not newer than the last accepted from the peer
	DropUnexpected                   // response that answers no init of ours
	DropRace                         // peer's init lost to ours (simultaneous inits)
	DropReflected                    // our own message sent back to us
	DropMismatch                     // the peer's encrypt setting differs from ours
	NumDrops
)

var dropNames = [...]string{
	DropTooShort:     "too_short",
	DropUnknownIndex: "unknown_index",
	DropBadTag:       "bad_tag",
	DropReplayed:     "replayed",
	DropTooOld:       "too_old",
	DropCounterLimit: "counter_limit",
	DropMalformed:    "handshake_malformed",
	DropStale:        "handshake_stale",
	DropUnexpected:   "handshake_unexpected",
	DropRace:         "handshake_race",
	DropReflected:    "handshake_reflected",
	DropMismatch:     "handshake_encrypt_mismatch",
}

// Reason is the metric label for d.
func (d Drop) Reason() string {
	if int(d) < len(dropNames) && dropNames[d] != "" {
		return dropNames[d]
	}
	return "unknown"
}

func (d Drop) Error() string { return "session: dropped packet: " + d.Reason() }
