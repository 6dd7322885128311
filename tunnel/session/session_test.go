package session

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

func connected(t *testing.T, encrypt bool) (a, b *endpoint) {
	t.Helper()
	a, b = newEndpoint(t, 1, encrypt), newEndpoint(t, 2, encrypt)
	connect(t, a, b)
	return a, b
}

func modes(t *testing.T, f func(t *testing.T, encrypt bool)) {
	t.Run("auth only", func(t *testing.T) { f(t, false) })
	t.Run("encrypted", func(t *testing.T) { f(t, true) })
}

func TestSealOpenBothWays(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		for i, pair := range [][2]*endpoint{{a, b}, {b, a}, {a, b}} {
			p := pair[0].send(t, goldenInner)
			wire := p[len(greHdr)+header.SealedHeaderLen : len(p)-header.SealedTagLen]
			if encrypt == bytes.Equal(wire, goldenInner) {
				t.Fatalf("packet %d: inner on the wire %x (encrypt %v)", i, wire, encrypt)
			}
			o, err := pair[1].t.Open(p, len(greHdr))
			if err != nil || o.Type != header.EtherTypeIPv4 || !bytes.Equal(o.Inner, goldenInner) {
				t.Fatalf("packet %d: Open = %+v, %v", i, o, err)
			}
			if &o.Inner[0] != &p[len(greHdr)+header.SealedHeaderLen] {
				t.Fatalf("packet %d: inner not opened in place", i)
			}
		}
	})
}

func TestSealCounters(t *testing.T) {
	a, _ := connected(t, false)
	for want := uint64(0); want < 3; want++ {
		if c := header.Sealed(a.send(t, goldenInner)[len(greHdr):]).Counter(); c != want {
			t.Fatalf("counter %d, want %d", c, want)
		}
	}
}

func TestSealNoRoom(t *testing.T) {
	a, _ := connected(t, false)
	s := a.t.Current()
	buf, off := sealBuf(goldenInner)
	for name, f := range map[string]func() ([]byte, error){
		"headroom for GRE": func() ([]byte, error) {
			return s.Seal(buf, off, len(goldenInner), off-header.SealedHeaderLen+1, 0x0800)
		},
		"headroom sealed": func() ([]byte, error) { return s.Seal(buf, header.SealedHeaderLen-1, 4, 0, 0x0800) },
		"tailroom":        func() ([]byte, error) { return s.Seal(buf, off, len(goldenInner)+1, len(greHdr), 0x0800) },
		"negative":        func() ([]byte, error) { return s.Seal(buf, off, -1, len(greHdr), 0x0800) },
	} {
		if p, err := f(); !errors.Is(err, ErrNoRoom) || p != nil {
			t.Errorf("%s: %x, %v; want ErrNoRoom", name, p, err)
		}
	}
}

func TestSealExhausted(t *testing.T) {
	a, b := connected(t, false)
	s := a.t.Current()
	s.sendCounter.Store(RejectAfterMessages - 1)
	p := a.send(t, goldenInner)
	if _, err := b.t.Open(p, len(greHdr)); err != nil {
		t.Fatalf("last counter: %v", err)
	}
	for i := 0; i < 3; i++ {
		buf, off := sealBuf(goldenInner)
		if _, err := s.Seal(buf, off, len(goldenInner), len(greHdr), 0x0800); !errors.Is(err, ErrExhausted) {
			t.Fatalf("after RejectAfterMessages: %v, want ErrExhausted", err)
		}
	}
	if c := s.sendCounter.Load(); c != RejectAfterMessages {
		t.Fatalf("counter %d left past the limit", c)
	}
}

// TestOpenDrops: each reason, and a dropped packet leaves the window as it
// was.
func TestOpenDrops(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		first := a.send(t, goldenInner)
		var old [][]byte
		for i := 0; i < WindowSize+1; i++ {
			old = append(old, a.send(t, goldenInner))
		}
		last := old[len(old)-1]
		if _, err := b.t.Open(clone(last), len(greHdr)); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name string
			pkt  []byte
			want Drop
		}{
			{"too short", last[:len(greHdr)+header.SealedOverhead-1], DropTooShort},
			{"empty", nil, DropTooShort},
			{"unknown index", withIndex(last, 0xdeadbeef), DropUnknownIndex},
			{"handshake index", withIndex(last, 0), DropUnknownIndex},
			{"bad tag", flip(old[len(old)-2], len(old[len(old)-2])-1), DropBadTag},
			{"replayed", last, DropReplayed},
			{"too old", first, DropTooOld},
		}
		for _, c := range cases {
			if _, err := b.t.Open(clone(c.pkt), len(greHdr)); err != c.want {
				t.Errorf("%s: %v, want %v", c.name, err, c.want)
			}
		}
		// The oldest still inside opens, once; the bad-tag one's counter
		// was not used up by the forgery.
		if _, err := b.t.Open(clone(old[1]), len(greHdr)); err != nil {
			t.Errorf("oldest inside the window: %v", err)
		}
		if _, err := b.t.Open(clone(old[len(old)-2]), len(greHdr)); err != nil {
			t.Errorf("genuine packet after a forgery with its counter: %v", err)
		}
		if _, err := b.t.Open(clone(old[0]), len(greHdr)); err != DropTooOld {
			t.Errorf("just outside the window: %v", err)
		}
	})
}

func clone(p []byte) []byte { return append([]byte(nil), p...) }

func flip(p []byte, i int) []byte {
	q := clone(p)
	q[i] ^= 0x01
	return q
}

func withIndex(p []byte, idx uint32) []byte {
	q := clone(p)
	f := header.SealedFields{ReceiverIndex: idx, Counter: header.Sealed(q[len(greHdr):]).Counter(), InnerType: header.Sealed(q[len(greHdr):]).InnerType()}
	f.Encode(header.Sealed(q[len(greHdr):]))
	return q
}

// TestSealedTamper flips every bit of a sealed packet, GRE header
// included: no flipped packet opens, and the genuine one still does.
func TestSealedTamper(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		p := a.send(t, goldenInner)
		for i := range p {
			for bit := 0; bit < 8; bit++ {
				q := clone(p)
				q[i] ^= 1 << bit
				if o, err := b.t.Open(q, len(greHdr)); err == nil {
					t.Fatalf("byte %d bit %d flipped: opened %x", i, bit, o.Inner)
				}
			}
		}
		// Truncated or extended by a byte.
		if _, err := b.t.Open(clone(p[:len(p)-1]), len(greHdr)); err == nil {
			t.Fatal("truncated packet opened")
		}
		if _, err := b.t.Open(append(clone(p), 0), len(greHdr)); err == nil {
			t.Fatal("extended packet opened")
		}
		// Another GRE header length moves the AD boundary.
		if _, err := b.t.Open(clone(p), len(greHdr)-4); err == nil {
			t.Fatal("opened with a shorter GRE header")
		}
		if o, err := b.t.Open(clone(p), len(greHdr)); err != nil || !bytes.Equal(o.Inner, goldenInner) {
			t.Fatalf("genuine packet after the tampered ones: %v", err)
		}
	})
}

// TestEncryptMustAgree: an auth-only packet does not open as encrypted and
// the other way round.
func TestEncryptMustAgree(t *testing.T) {
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, 1, 2)
	for _, enc := range []bool{false, true} {
		s := newSession(i2r, r2i, 1, 2, 1, 2, true, enc)
		r := newSession(r2i, i2r, 2, 1, 2, 1, false, !enc)
		buf, off := sealBuf(goldenInner)
		p, _ := s.Seal(buf, off, len(goldenInner), len(greHdr), 0x0800)
		if _, _, err := r.Open(p, len(greHdr)); err != DropBadTag {
			t.Errorf("sealed with encrypt=%v, opened with %v: %v", enc, !enc, err)
		}
	}
}

// TestOpenConcurrent: many goroutines opening copies of the same packets
// deliver each counter once.
func TestOpenConcurrent(t *testing.T) {
	a, b := connected(t, true)
	var pkts [][]byte
	for i := 0; i < 200; i++ {
		pkts = append(pkts, a.send(t, goldenInner))
	}
	var mu sync.Mutex
	got := map[uint64]int{}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, p := range pkts {
				q := clone(p)
				if _, err := b.t.Open(q, len(greHdr)); err == nil {
					mu.Lock()
					got[header.Sealed(q[len(greHdr):]).Counter()]++
					mu.Unlock()
				} else if err != DropReplayed {
					t.Errorf("concurrent Open: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	if len(got) != len(pkts) {
		t.Fatalf("%d counters delivered, want %d", len(got), len(pkts))
	}
	for c, n := range got {
		if n != 1 {
			t.Fatalf("counter %d delivered %d times", c, n)
		}
	}
}

func TestSealOpenAllocs(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		s, r := a.t.Current(), &b.t
		inner := make([]byte, 1400)
		buf, off := sealBuf(inner)
		n := testing.AllocsPerRun(1000, func() {
			p, err := s.Seal(buf, off, len(inner), len(greHdr), header.EtherTypeIPv4)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Open(p, len(greHdr)); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Fatalf("%v allocations per sealed and opened packet", n)
		}
	})
}

// TestTableResponderWaits: a responder's new session stays next (the
// current one still seals) until a packet under it opens; the previous
// session's packets in flight still open after the switch.
func TestTableResponderWaits(t *testing.T) {
	a, b := connected(t, false)
	s1 := b.t.Current()
	inflight := a.send(t, goldenInner)
	// A second handshake a → b, whose response is not yet back at a.
	init := a.init(t)
	o, err := b.handle(t, init)
	if err != nil || o.Session == nil {
		t.Fatal(err)
	}
	if b.t.Current() != s1 {
		t.Fatal("responder switched to an unconfirmed session")
	}
	if _, err := a.handle(t, o.Reply); err != nil {
		t.Fatal(err)
	}
	if a.t.Current() == a.t.previous.Load() || a.t.Current().LocalIndex() != o.Session.RemoteIndex() {
		t.Fatal("initiator did not switch at the response")
	}
	if _, err := b.t.Open(a.send(t, goldenInner), len(greHdr)); err != nil {
		t.Fatal(err)
	}
	if b.t.Current() != o.Session {
		t.Fatal("responder did not switch after a packet under the new session")
	}
	if _, err := b.t.Open(inflight, len(greHdr)); err != nil {
		t.Fatalf("packet of the previous session in flight: %v", err)
	}
	// The one before that is gone.
	s0 := b.t.previous.Load()
	connect(t, a, b)
	b.t.Open(a.send(t, goldenInner), len(greHdr))
	if b.t.previous.Load() == s0 || b.t.Current() == s0 {
		t.Fatal("the table keeps more than current, next and previous")
	}
}

// TestResealOpensOnceMore: a kept packet sent again as it was is a replay;
// resealed, it opens once more with the same inner, and a packet another
// session sealed is refused.
func TestResealOpensOnceMore(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		p := a.send(t, goldenInner)
		kept := append([]byte(nil), p...)
		if _, err := b.t.Open(p, len(greHdr)); err != nil {
			t.Fatal(err)
		}
		again := append([]byte(nil), kept...)
		if _, err := b.t.Open(again, len(greHdr)); !errors.Is(err, DropReplayed) {
			t.Fatalf("the kept packet sent again: %v, want replayed", err)
		}
		if err := a.t.Current().Reseal(kept, len(greHdr)); err != nil {
			t.Fatal(err)
		}
		if c := header.Sealed(kept[len(greHdr):]).Counter(); c != 1 {
			t.Errorf("resealed under counter %d, want 1", c)
		}
		o, err := b.t.Open(kept, len(greHdr))
		if err != nil || !bytes.Equal(o.Inner, goldenInner) {
			t.Fatalf("resealed: %x, %v", o.Inner, err)
		}
		other := b.send(t, goldenInner) // b's session seals toward a: another index
		if err := a.t.Current().Reseal(other, len(greHdr)); !errors.Is(err, ErrNotOurs) {
			t.Errorf("reseal of the peer's packet: %v, want ErrNotOurs", err)
		}
	})
}
