package director

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tunbond/tunbond/scheduler/lb"
)

var t0 = time.Unix(1000, 0)

var rip = netip.MustParseAddrPort("10.0.0.1:80")

func key(port uint16) Key {
	return Key{Proto: 6, Client: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.7"), port),
		VIP: netip.MustParseAddrPort("192.0.2.10:80")}
}

func TestTCPStatesAndCounts(t *testing.T) {
	tb := NewTable(100, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	c := tb.Insert(key(1000), d, rip, FlagSYN, 60, t0)
	if c.State != StateSynRecv || d.Inactive != 1 || d.Active != 0 {
		t.Fatalf("after SYN: %v, active %d inactive %d", c.State, d.Active, d.Inactive)
	}
	if tb.Lookup(key(1000), FlagACK, 52, t0) != c || c.State != StateUnconfirmed || d.Active != 0 || d.Inactive != 1 ||
		!c.Expires.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("after the handshake's ACK: %v, active %d inactive %d, expires in %v", c.State, d.Active, d.Inactive, c.Expires.Sub(t0))
	}
	if tb.Lookup(key(1000), FlagACK, 52, t0) != c || c.State != StateEstablished || d.Active != 1 || d.Inactive != 0 {
		t.Fatalf("after a third packet: %v, active %d inactive %d", c.State, d.Active, d.Inactive)
	}
	if !c.Expires.Equal(t0.Add(900 * time.Second)) {
		t.Fatalf("established expires in %v", c.Expires.Sub(t0))
	}
	tb.Lookup(key(1000), FlagSYN, 60, t0)
	if c.State != StateEstablished {
		t.Fatal("a stray SYN reset an established connection")
	}
	tb.Lookup(key(1000), FlagFIN|FlagACK, 52, t0)
	if c.State != StateFinWait || d.Active != 0 || d.Inactive != 1 || !c.Expires.Equal(t0.Add(120*time.Second)) {
		t.Fatalf("after FIN: %v active %d inactive %d", c.State, d.Active, d.Inactive)
	}
	tb.Lookup(key(1000), FlagRST, 40, t0)
	if c.State != StateClose || c.Packets != 6 {
		t.Fatalf("after RST: %v, %d packets", c.State, c.Packets)
	}
}

func TestExpiry(t *testing.T) {
	tb := NewTable(100, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	tb.Insert(key(1), d, rip, FlagSYN, 60, t0)
	tb.Lookup(key(1), FlagACK, 60, t0)
	tb.Lookup(key(1), FlagACK, 60, t0) // established, 900 s
	u := Key{Proto: 17, Client: key(2).Client, VIP: key(2).VIP}
	tb.Insert(u, d, rip, 0, 60, t0) // UDP, 300 s
	tb.Expire(t0.Add(299 * time.Second))
	if tb.Len() != 2 {
		t.Fatalf("expired early: %d left", tb.Len())
	}
	tb.Expire(t0.Add(300 * time.Second))
	if tb.Len() != 1 || d.Inactive != 0 || d.Active != 1 {
		t.Fatalf("UDP not expired: %d left, inactive %d", tb.Len(), d.Inactive)
	}
	// A lookup after expiry finds nothing.
	if tb.Lookup(key(1), FlagACK, 60, t0.Add(901*time.Second)) != nil || d.Active != 0 || tb.Stats.Expired != 2 {
		t.Fatalf("stale connection found; active %d expired %d", d.Active, tb.Stats.Expired)
	}
}

// TestEvictionOrder: a full table evicts an unconfirmed entry before an
// inactive one (UDP here), and an inactive one before an established one.
func TestEvictionOrder(t *testing.T) {
	tb := NewTable(3, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	confirm := func(k Key, at time.Time) {
		tb.Lookup(k, FlagACK, 60, at)
		tb.Lookup(k, FlagACK, 60, at)
	}
	udp := key(2)
	udp.Proto = 17
	tb.Insert(key(1), d, rip, FlagSYN, 60, t0)
	confirm(key(1), t0)
	tb.Insert(udp, d, rip, 0, 60, t0.Add(time.Second))
	tb.Insert(key(3), d, rip, FlagSYN, 60, t0.Add(2*time.Second)) // unconfirmed, the newest
	tb.Insert(key(4), d, rip, FlagSYN, 60, t0.Add(3*time.Second))
	if tb.Lookup(key(3), FlagACK, 60, t0.Add(3*time.Second)) != nil || tb.Stats.Evicted[EvictUnconfirmed] != 1 {
		t.Fatalf("the unconfirmed entry stayed (evicted %v)", tb.Stats.Evicted)
	}
	confirm(key(4), t0.Add(3*time.Second))
	tb.Insert(key(5), d, rip, FlagSYN, 60, t0.Add(4*time.Second))
	if tb.Lookup(udp, 0, 60, t0.Add(4*time.Second)) != nil || tb.Stats.Evicted != [numEvictClasses]uint64{EvictUnconfirmed: 1, EvictInactive: 1} {
		t.Fatalf("the inactive UDP entry stayed (evicted %v)", tb.Stats.Evicted)
	}
	if tb.Lookup(key(1), FlagACK, 60, t0.Add(4*time.Second)) == nil {
		t.Fatal("an established entry went before the inactive one")
	}
}

func TestFullTableEvictsOldestInactive(t *testing.T) {
	tb := NewTable(3, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	tb.Insert(key(1), d, rip, FlagSYN, 60, t0)
	tb.Lookup(key(1), FlagACK, 60, t0)
	tb.Lookup(key(1), FlagACK, 60, t0) // the third packet: confirmed, active
	tb.Insert(key(2), d, rip, FlagSYN, 60, t0.Add(time.Second))
	tb.Insert(key(3), d, rip, FlagSYN, 60, t0.Add(2*time.Second))
	if tb.Insert(key(4), d, rip, FlagSYN, 60, t0.Add(3*time.Second)) == nil {
		t.Fatal("refused while inactive connections could go")
	}
	if tb.Lookup(key(2), FlagACK, 60, t0.Add(3*time.Second)) != nil {
		t.Fatal("the oldest inactive connection was not the one evicted")
	}
	if tb.Lookup(key(1), FlagACK, 60, t0.Add(3*time.Second)) == nil {
		t.Fatal("an active connection was evicted")
	}
	// All active: the one idle the longest makes room; none is refused.
	for _, k := range []Key{key(3), key(4)} {
		tb.Lookup(k, FlagACK, 60, t0.Add(3*time.Second))
		tb.Lookup(k, FlagACK, 60, t0.Add(3*time.Second))
	}
	if tb.Insert(key(5), d, rip, FlagSYN, 60, t0.Add(4*time.Second)) == nil || tb.Stats.Refused != 0 ||
		tb.Stats.Evicted != [numEvictClasses]uint64{EvictUnconfirmed: 1, EvictIdle: 1} {
		t.Fatalf("refused %d evicted %v", tb.Stats.Refused, tb.Stats.Evicted)
	}
	if tb.Lookup(key(1), FlagACK, 60, t0.Add(4*time.Second)) != nil {
		t.Fatal("the established connection idle the longest was not the one evicted")
	}
}

func TestDropDest(t *testing.T) {
	tb := NewTable(10, DefaultTimeouts)
	a, b := &lb.Dest{Weight: 1, Up: true}, &lb.Dest{Weight: 1, Up: true}
	tb.Insert(key(1), a, rip, FlagSYN, 60, t0)
	tb.Insert(key(2), b, rip, FlagSYN, 60, t0)
	tb.Insert(key(3), a, rip, FlagACK, 60, t0) // mid-stream: unconfirmed until two more packets
	tb.Lookup(key(3), FlagACK, 60, t0)
	tb.Lookup(key(3), FlagACK, 60, t0)
	if a.Active != 1 || a.Inactive != 1 {
		t.Fatalf("a: active %d inactive %d", a.Active, a.Inactive)
	}
	if n := tb.DropDest(a); n != 2 || tb.Len() != 1 || a.Active != 0 || a.Inactive != 0 {
		t.Fatalf("dropped %d, %d left, a %d/%d", n, tb.Len(), a.Active, a.Inactive)
	}
}

func BenchmarkLookup(b *testing.B) {
	tb := NewTable(1<<20, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	for i := 0; i < 10000; i++ {
		tb.Insert(key(uint16(i)), d, rip, FlagSYN, 60, t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tb.Lookup(key(uint16(i%10000)), FlagACK, 1400, t0)
		i++
	}
}

func TestSYNOnClosingConnectionStartsAnew(t *testing.T) {
	tb := NewTable(10, DefaultTimeouts)
	d := &lb.Dest{Weight: 1, Up: true}
	tb.Insert(key(1), d, rip, FlagSYN, 60, t0)
	tb.Lookup(key(1), FlagACK, 60, t0)
	tb.Lookup(key(1), FlagFIN|FlagACK, 60, t0)
	if tb.Lookup(key(1), FlagSYN, 60, t0) != nil || tb.Stats.Reused != 1 || d.Inactive != 0 || d.Active != 0 {
		t.Fatalf("SYN on a closing connection: reused %d, counts %d/%d", tb.Stats.Reused, d.Active, d.Inactive)
	}
	tb.Insert(key(2), d, rip, FlagSYN, 60, t0)
	tb.Lookup(key(2), FlagACK, 60, t0)
	if tb.Lookup(key(2), FlagSYN, 60, t0) == nil {
		t.Fatal("a stray SYN on an established connection started a new one")
	}
}
