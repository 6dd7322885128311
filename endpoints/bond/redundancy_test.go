package bond

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"
)

// tcpSegment is an IPv4 TCP segment of n bytes (header included) with the
// given flags and TOS.
func tcpSegment(n int, flags, tos uint8) []byte {
	b := make([]byte, max(n, 40))
	header.EncodeIPv4(b, len(b), 64, header.ProtoTCP, [4]byte{10, 77, 0, 1}, [4]byte{10, 77, 0, 2})
	b[1] = tos
	b[20+12] = 5 << 4
	b[20+13] = flags
	return b
}

func ipv6Packet(n int, tclass uint8) []byte {
	b := make([]byte, max(n, 48))
	b[0], b[1] = 6<<4|tclass>>4, tclass<<4
	b[6] = header.ProtoUDP
	return b
}

func TestRedundancyMatches(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  RedundancyConfig
		pkt  []byte
		want bool
	}{
		{"off", RedundancyConfig{}, tcpSegment(40, header.TCPFlagSYN, 46<<2), false},
		{"small enough", RedundancyConfig{MaxSize: 200}, tcpSegment(200, header.TCPFlagACK, 0), true},
		{"too big", RedundancyConfig{MaxSize: 200}, tcpSegment(201, header.TCPFlagACK, 0), false},
		{"EF by name", RedundancyConfig{DSCP: []string{"EF"}}, tcpSegment(1400, header.TCPFlagACK, 46<<2|1), true},
		{"AF41 by number", RedundancyConfig{DSCP: []string{"34"}}, tcpSegment(1400, header.TCPFlagACK, 34<<2), true},
		{"other DSCP", RedundancyConfig{DSCP: []string{"ef"}}, tcpSegment(1400, header.TCPFlagACK, 10<<2), false},
		{"IPv6 EF", RedundancyConfig{DSCP: []string{"ef"}}, ipv6Packet(1000, 46<<2), true},
		{"SYN", RedundancyConfig{TCPFlags: []string{"syn"}}, tcpSegment(1400, header.TCPFlagSYN, 0), true},
		{"SYN-ACK", RedundancyConfig{TCPFlags: []string{"syn"}}, tcpSegment(60, header.TCPFlagSYN|header.TCPFlagACK, 0), true},
		{"plain ACK", RedundancyConfig{TCPFlags: []string{"syn", "fin"}}, tcpSegment(60, header.TCPFlagACK, 0), false},
		{"truncated TCP", RedundancyConfig{TCPFlags: []string{"syn"}}, tcpSegment(40, header.TCPFlagSYN, 0)[:30], false},
		{"not IP", RedundancyConfig{DSCP: []string{"ef"}}, []byte{0x00, 0xb8}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, bad := tt.cfg.compile()
			if len(bad) > 0 {
				t.Fatal(bad)
			}
			if got := r.on() && r.matches(tt.pkt); got != tt.want {
				t.Fatalf("matches %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRedundancyConfigErrorsNameTheKey(t *testing.T) {
	_, bad := RedundancyConfig{MaxSize: -1, DSCP: []string{"ef", "x9"}, TCPFlags: []string{"ack"}}.compile()
	got := strings.Join(bad, "\n")
	for _, want := range []string{"redundancy.max_size", "redundancy.dscp[1]", "redundancy.tcp_flags[0]"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems %q lack %s", got, want)
		}
	}
}

// TestEngineSendsTheClassTwice: with tcp_flags [syn], a SYN leaves on both
// paths, reaches B's TUN once, and is counted; a plain segment leaves once.
func TestEngineSendsTheClassTwice(t *testing.T) {
	ep := newEnginePair(t, encap.GRE{Key: 7}, "adaptive", 1, 1)
	ep.a.redundancy, _ = RedundancyConfig{TCPFlags: []string{"syn"}}.compile()
	tx := func() (n uint64) {
		for _, p := range ep.a.paths {
			n += p.txPackets.Load()
		}
		return n
	}
	recv := func(what string) []byte {
		select {
		case got := <-ep.tb.Inbound:
			return got
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never reached B", what)
		}
		return nil
	}
	before := tx()
	ep.ta.Outbound <- tcpSegment(60, header.TCPFlagSYN, 0)
	if got := recv("the SYN"); header.TCP(got[20:]).Flags() != header.TCPFlagSYN {
		t.Fatalf("got %x", got)
	}
	ep.ta.Outbound <- tcpSegment(60, header.TCPFlagACK, 0)
	if got := recv("the ACK"); header.TCP(got[20:]).Flags() != header.TCPFlagACK {
		t.Fatalf("the SYN's second copy reached B's TUN (or the ACK did not): %x", got)
	}
	if d := tx() - before; d != 3 {
		t.Errorf("%d packets sent for a SYN and an ACK, want 3 (the SYN twice)", d)
	}
	if n := ep.a.Stats.Redundant.Load(); n != 1 {
		t.Errorf("%d redundant packets counted, want 1", n)
	}
}

// TestSealedRedundantCopiesAreNotReplays: with auth, the second copy is
// sealed under its own counter, so the peer takes both (its reorder buffer
// drops the later as a duplicate) and none is a replay: both paths'
// deliveries are counted in their feedback.
// With encrypt too: the class is matched on the packet before it is
// encrypted (it once was matched on the ciphertext, and never sent twice).
func TestSealedRedundantCopiesAreNotReplays(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		t.Run(fmt.Sprint("encrypt=", encrypt), func(t *testing.T) { testSealedRedundantCopies(t, encrypt) })
	}
}

func testSealedRedundantCopies(t *testing.T, encrypt bool) {
	ep := newEnginePairWith(t, encap.GRE{Key: 7}, "adaptive", 50*time.Millisecond, func(c *EngineConfig) {
		withAuth(encrypt)(c)
		c.Redundancy = RedundancyConfig{TCPFlags: []string{"syn"}}
	}, 1, 1)
	rs := ep.b.ReorderStats()
	dup := rs.Duplicate.Load() + rs.Late.Load()
	ep.ta.Outbound <- tcpSegment(60, header.TCPFlagSYN, 0)
	select {
	case <-ep.tb.Inbound:
	case <-time.After(5 * time.Second):
		t.Fatal("the SYN never reached B")
	}
	await(t, "the second copy dropped by B's reorder buffer (a duplicate, or late: the first was handed on)", func() bool {
		return rs.Duplicate.Load()+rs.Late.Load() == dup+1
	})
	for _, p := range ep.b.paths {
		if n := p.authDrops[session.DropReplayed].Load(); n != 0 {
			t.Errorf("path %s dropped %d copies as replays", p.Name, n)
		}
	}
}
