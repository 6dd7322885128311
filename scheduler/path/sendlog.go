package path

// SentPacket is the sender's record of one data packet sent on a path.
type SentPacket struct {
	Seq    uint32 // bond sequence number
	Size   uint32 // inner bytes, as the receiver counts them in its feedback
	SentAt int64  // sender's clock when it was sent, ns
	// Packets and Bytes are what the path had carried when this packet
	// went, itself included: the sender's side of the feedback's counters.
	Packets uint64
	Bytes   uint64
}

// SendLog is the sender's record of the data packets it sent on one path,
// for the path's estimates (Estimate) to match the receiver's feedback
// against: the send time and size of each of the latest bond sequences, and
// how many packets and bytes the path had carried up to each. It is a ring
// indexed by bond sequence, so it holds the path's packets among the last
// Cap() bond sequences (of every path: a sequence that went elsewhere
// leaves a hole), looks one up in O(1), and neither grows nor allocates
// after NewSendLog. It is not safe for concurrent use: the engine records on
// its TX goroutine and reads at feedback, under one lock.
type SendLog struct {
	ring    []SentPacket
	mask    uint32
	last    uint32 // highest sequence recorded
	packets uint64 // packets recorded, ever
	bytes   uint64
}

// NewSendLog returns a log covering n bond sequences, n rounded up to a
// power of two (at least 2). It must cover what is in flight on the bond's
// slowest path: at 1 Gbit/s of 1400-byte packets, 65536 sequences are 0.73 s
// (2 MiB, 32 bytes a sequence).
func NewSendLog(n int) *SendLog {
	size := 2
	for size < n {
		size <<= 1
	}
	return &SendLog{ring: make([]SentPacket, size), mask: uint32(size - 1)}
}

// Cap is how many bond sequences the log covers.
func (l *SendLog) Cap() int { return len(l.ring) }

// Record logs packet seq of size inner bytes sent at sentAt on the path.
// Sequences are expected to grow (modulo 2³²); a sequence behind the last
// (a packet sent again) is recorded as another packet of the path if it is
// still within the log, and not recorded (false) if it is older than that.
func (l *SendLog) Record(seq uint32, size uint32, sentAt int64) bool {
	if l.packets > 0 {
		if behind := l.last - seq; int32(behind) > 0 {
			if behind >= uint32(len(l.ring)) {
				return false
			}
		} else {
			l.last = seq
		}
	} else {
		l.last = seq
	}
	l.packets++
	l.bytes += uint64(size)
	l.ring[seq&l.mask] = SentPacket{Seq: seq, Size: size, SentAt: sentAt, Packets: l.packets, Bytes: l.bytes}
	return true
}

// Lookup returns the record of seq if it was sent on this path and is still
// in the log (within Cap() sequences of the highest recorded).
func (l *SendLog) Lookup(seq uint32) (SentPacket, bool) {
	if l.packets == 0 {
		return SentPacket{}, false
	}
	if behind := l.last - seq; int32(behind) < 0 || behind >= uint32(len(l.ring)) {
		return SentPacket{}, false
	}
	p := l.ring[seq&l.mask]
	if p.Packets == 0 || p.Seq != seq {
		return SentPacket{}, false
	}
	return p, true
}

// Lost is how many packets the path lost up to seq, the highest sequence
// the receiver has had on it, given that it delivered `delivered` packets
// in all: those the path carried up to seq that the receiver has not
// counted. ok is false if seq is not in the log. A path delivers in order,
// so nothing sent up to seq is still on its way; what was sent after (a
// packet sent again with an older sequence, one reordered on the path) can
// make the count low, never negative.
func (l *SendLog) Lost(seq uint32, delivered uint64) (lost uint64, ok bool) {
	p, ok := l.Lookup(seq)
	if !ok {
		return 0, false
	}
	if p.Packets <= delivered {
		return 0, true
	}
	return p.Packets - delivered, true
}

// Highest is the highest sequence recorded; ok is false before the first.
func (l *SendLog) Highest() (seq uint32, ok bool) { return l.last, l.packets > 0 }

// Sent is how many packets and inner bytes were recorded, ever.
func (l *SendLog) Sent() (packets, bytes uint64) { return l.packets, l.bytes }

// Reset forgets every record (a new peer epoch starts the counters anew).
func (l *SendLog) Reset() {
	clear(l.ring)
	l.last, l.packets, l.bytes = 0, 0, 0
}
