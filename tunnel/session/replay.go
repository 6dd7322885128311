package session

// The replay window follows RFC 6479 (as WireGuard does): a ring of 64-bit
// words, one bit per counter, advanced by clearing the words the newest
// counter jumped over, so accepting a counter costs O(1) however far it
// jumps. The ring holds more words than the window needs, so the word that
// is being reused never holds a counter still inside the window.

// WindowSize is how far behind the newest counter accepted a counter may be
// and still be accepted (once). A bond's paths reorder far more than one
// WireGuard socket does: its receive loops (one per path) hand over packets
// milliseconds apart under load, and its paths differ in delay by tens of
// milliseconds. 65536 counters is 180 ms at 4 Gbit/s of 1400-byte packets,
// more than the default reorder window (4096 packets) waits for; 2048 (as
// WireGuard's) dropped hundreds of packets a second as too old between two
// unshaped veths.
const WindowSize = 65536

// RejectAfterMessages is the first counter never sent nor accepted. It
// stays 2^13 below 2^64, more than the senders that can race past it
// before one of them stops the counter, so a counter never wraps around
// to a used value.
const RejectAfterMessages = 1<<64 - 1<<13 - 1

const (
	wordBits  = 64
	wordShift = 6
	bitMask   = wordBits - 1
	ringWords = 2048 // a power of two, more than the WindowSize/wordBits+1 words a window touches (16 KiB)
	ringMask  = ringWords - 1
)

// The ring must hold every word a window touches plus the one being reused.
var _ [ringWords - (WindowSize/wordBits + 1)]struct{}

// Window is one receive direction's replay window. Its zero value accepts
// any first counter. It is not safe for concurrent use.
type Window struct {
	last uint64 // the newest counter accepted
	seen bool   // a counter has been accepted
	ring [ringWords]uint64
}

// Check reports whether counter c would be accepted, without recording it:
// 0, or why it would be dropped (DropCounterLimit, DropTooOld,
// DropReplayed).
func (w *Window) Check(c uint64) Drop {
	switch {
	case c >= RejectAfterMessages:
		return DropCounterLimit
	case !w.seen || c > w.last:
		return 0
	case w.last-c >= WindowSize:
		return DropTooOld
	case w.ring[(c>>wordShift)&ringMask]&(1<<(c&bitMask)) != 0:
		return DropReplayed
	}
	return 0
}

// Accept records counter c if Check allows it and returns Check's answer.
// Call it only once the packet has been authenticated.
func (w *Window) Accept(c uint64) Drop {
	if d := w.Check(c); d != 0 {
		return d
	}
	if !w.seen || c > w.last {
		w.advance(c)
	}
	w.ring[(c>>wordShift)&ringMask] |= 1 << (c & bitMask)
	return 0
}

// advance makes c the newest counter, clearing the words between the last
// newest one's word (exclusive) and c's (inclusive).
func (w *Window) advance(c uint64) {
	cw := c >> wordShift
	if !w.seen {
		w.ring[cw&ringMask] = 0
	} else {
		lw := w.last >> wordShift
		n := cw - lw
		if n > ringWords {
			n = ringWords
		}
		for i := uint64(1); i <= n; i++ {
			w.ring[(lw+i)&ringMask] = 0
		}
	}
	w.last, w.seen = c, true
}

// Reset forgets every counter.
func (w *Window) Reset() { *w = Window{} }
