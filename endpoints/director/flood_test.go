package director

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// TestFloodOfSpoofedHandshakes: spoofed SYN and ACK pairs from 8000
// sources (four times a 2000-entry table) interleaved with real clients
// (SYN, ACK, a request, more): every real client's packets are forwarded,
// the real clients' entries survive the flood, and the table and the
// persistence map never pass their bound.
func TestFloodOfSpoofedHandshakes(t *testing.T) {
	d := New(2000, DefaultTimeouts, 1500, newDirector(t).codec)
	for _, l := range []string{"-A -t 192.0.2.10:80 -s wlc -p 300", "-a -t 192.0.2.10:80 -r 10.0.0.1", "-a -t 192.0.2.10:80 -r 10.0.0.2"} {
		c, _ := ParseCommand(strings.Fields(l))
		if err := d.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	now := t0
	real := 0
	for i := 0; i < 8000; i++ {
		now = now.Add(time.Millisecond)
		spoofed := fmt.Sprintf("203.0.%d.%d", i/250, i%250+1)
		for _, fl := range []uint8{FlagSYN, FlagACK} {
			d.Process(tcp(spoofed, 40000, "192.0.2.10", 80, fl, 60, true), now)
		}
		if i%10 == 0 { // a real client: handshake, request, ACKs
			real++
			client := fmt.Sprintf("198.51.%d.%d", real/250, real%250+1)
			for _, fl := range []uint8{FlagSYN, FlagACK, FlagACK | 0x08, FlagACK, FlagACK} {
				if v := d.Process(tcp(client, 50000, "192.0.2.10", 80, fl, 60, true), now); !v.Forward {
					t.Fatalf("real client %d (%s): packet flags %#x dropped: %v", real, client, fl, v.Drop)
				}
			}
		}
		if n := d.table.Len(); n > 2000 {
			t.Fatalf("the table holds %d entries, over its 2000", n)
		}
		for _, st := range d.svcs {
			if n := st.persist.len(); n > 2000 {
				t.Fatalf("the persistence map holds %d entries, over 2000", n)
			}
		}
	}
	// Every real client's entry is still there: the flood evicted its own.
	est := 0
	for _, c := range d.table.all {
		if c.State == StateEstablished {
			est++
		}
	}
	if est != real {
		t.Errorf("%d real clients established, %d in the table", real, est)
	}
	if s := d.table.Stats; s.Refused != 0 || s.Evicted[EvictIdle] != 0 || s.Evicted[EvictUnconfirmed] == 0 {
		t.Errorf("table stats %+v: want no refusal, the spoofed entries evicted and no established one", s)
	}
}

// TestSnapshotListsEveryConnection: a listing copies the whole table in
// chunks, each connection once when nothing changes meanwhile.
func TestSnapshotListsEveryConnection(t *testing.T) {
	tb := NewTable(20000, DefaultTimeouts)
	for i := 0; i < 10000; i++ {
		tb.Insert(key(uint16(i)), nil, rip, FlagSYN, 60, t0)
	}
	for i := 0; i < 10000; i += 3 {
		tb.Lookup(key(uint16(i)), FlagRST, 40, t0.Add(time.Second))
	}
	tb.Expire(t0.Add(10 * time.Second)) // the SYN_RECV ones go, moving others about in the dense slice; the CLOSE ones stay
	if tb.Len() != 3334 {
		t.Fatalf("%d left, want the 3334 closing ones", tb.Len())
	}
	seen := map[Key]bool{}
	var got []ConnInfo
	for from := 0; from < tb.Len(); {
		got, from = tb.Snapshot(got, from, 4096)
	}
	for _, c := range got {
		if seen[c.Key] {
			t.Fatalf("%v listed twice", c.Key)
		}
		seen[c.Key] = true
	}
	if len(seen) != tb.Len() {
		t.Fatalf("listed %d of %d connections", len(seen), tb.Len())
	}
}

// BenchmarkTableEntry measures the memory an entry costs (its index slot,
// entry, list links, dense slice): the README's bytes per connection.
func BenchmarkTableEntry(b *testing.B) {
	const n = 200000
	for i := 0; i < b.N; i++ {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		tb := NewTable(n, DefaultTimeouts)
		for j := 0; j < n; j++ {
			tb.Insert(benchKey(j), nil, rip, FlagSYN, 60, t0)
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		b.ReportMetric(float64(m1.HeapAlloc-m0.HeapAlloc)/n, "bytes/entry")
		runtime.KeepAlive(tb)
	}
}

// BenchmarkSnapshot measures one chunk's copy under the lock.
func BenchmarkSnapshot(b *testing.B) {
	tb := NewTable(100000, DefaultTimeouts)
	for i := 0; i < 100000; i++ {
		tb.Insert(benchKey(i), nil, rip, FlagSYN, 60, t0)
	}
	out := make([]ConnInfo, 0, snapshotChunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		out, _ = tb.Snapshot(out[:0], (i*snapshotChunk)%90000, snapshotChunk)
	}
}

// benchKey is the i-th of many distinct connections.
func benchKey(i int) Key {
	return Key{Proto: 6, Client: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 1000),
		VIP: netip.MustParseAddrPort("192.0.2.10:80")}
}

// TestPersistenceTableEvictsOneWhenFull: a full persistence map makes room
// for a new client by dropping the least recently used one alone (it once
// dropped everyone: every entry expires before the new one does).
func TestPersistenceTableEvictsOneWhenFull(t *testing.T) {
	p := newPersistTable(3)
	x := &real{}
	for i, c := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		now := t0.Add(time.Duration(i) * time.Second)
		p.put(netip.MustParseAddr(c), x, now, now.Add(300*time.Second))
	}
	now := t0.Add(10 * time.Second)
	p.put(netip.MustParseAddr("198.51.100.4"), x, now, now.Add(300*time.Second))
	if p.len() != 3 || p.evicted != 1 {
		t.Fatalf("%d entries, %d evicted; want 3 and 1", p.len(), p.evicted)
	}
	for _, c := range []string{"198.51.100.2", "198.51.100.3", "198.51.100.4"} {
		if p.get(netip.MustParseAddr(c), now) == nil {
			t.Errorf("%s lost its server", c)
		}
	}
	if p.get(netip.MustParseAddr("198.51.100.1"), now) != nil {
		t.Error("the least recently used client kept its entry")
	}
}

// BenchmarkProcessExisting is the director's decision for a packet of an
// existing UDP flow (parse, service, table, counters): what the data path
// spends beside its I/O (the TUN read, the send).
func BenchmarkProcessExisting(b *testing.B) {
	d := New(1<<16, DefaultTimeouts, 1500, encap.IPIP{})
	c, _ := ParseCommand(strings.Fields("-A -u 192.0.2.10:9 -s mh"))
	if err := d.Apply(c); err != nil {
		b.Fatal(err)
	}
	c, _ = ParseCommand(strings.Fields("-a -u 192.0.2.10:9 -r 10.0.0.1"))
	if err := d.Apply(c); err != nil {
		b.Fatal(err)
	}
	pkt := make([]byte, 64)
	header.EncodeIPv4(pkt, 64, 64, 17, netip.MustParseAddr("198.51.100.1").As4(), netip.MustParseAddr("192.0.2.10").As4())
	pkt[20], pkt[21], pkt[23] = 0x9c, 0x40, 9
	d.Process(pkt, t0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if v := d.Process(pkt, t0); !v.Forward {
			b.Fatal(v.Drop)
		}
	}
}

// BenchmarkProcessNew is the director's decision for the first packet of
// a new UDP flow (every packet another source address and port) with the
// default table of 1,048,576 connections, filled first: each new flow
// evicts the oldest, as under the lab's new-flows run.
func BenchmarkProcessNew(b *testing.B) {
	const size = 1 << 20
	d := New(size, DefaultTimeouts, 1500, encap.IPIP{})
	for _, cmd := range []string{"-A -u 192.0.2.10:9 -s mh", "-a -u 192.0.2.10:9 -r 10.0.0.1", "-a -u 192.0.2.10:9 -r 10.0.0.2"} {
		c, _ := ParseCommand(strings.Fields(cmd))
		if err := d.Apply(c); err != nil {
			b.Fatal(err)
		}
	}
	pkt := make([]byte, 64)
	header.EncodeIPv4(pkt, 64, 64, 17, netip.MustParseAddr("198.51.100.1").As4(), netip.MustParseAddr("192.0.2.10").As4())
	pkt[23] = 9
	flow := func(i int) {
		pkt[12], pkt[13], pkt[14], pkt[15] = 10, byte(i>>24), byte(i>>16), byte(i>>8)
		pkt[20], pkt[21] = byte(i), 0x80
	}
	for i := 0; i < size; i++ {
		flow(i)
		d.Process(pkt, t0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flow(size + i)
		if v := d.Process(pkt, t0); !v.Forward {
			b.Fatal(v.Drop)
		}
	}
}

// BenchmarkPersistNewClient is a new client of a persistent service whose
// client map is full (1,048,576 clients): the least recently used one
// goes and its entry is reused.
func BenchmarkPersistNewClient(b *testing.B) {
	const size = 1 << 20
	p := newPersistTable(size)
	x := &real{}
	client := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := 0; i < size; i++ {
		p.put(client(i), x, t0, t0.Add(time.Hour))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.put(client(size+i), x, t0, t0.Add(time.Hour))
	}
}
