package session

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

func TestHandshakeAgrees(t *testing.T) {
	modes(t, func(t *testing.T, encrypt bool) {
		a, b := connected(t, encrypt)
		as, bs := a.t.Current(), b.t.Current()
		if !as.Initiator() || bs.Initiator() || as.Encrypt() != encrypt || bs.Encrypt() != encrypt {
			t.Fatalf("roles or encrypt: %v %v %v %v", as.Initiator(), bs.Initiator(), as.Encrypt(), bs.Encrypt())
		}
		if as.Epoch() != a.h.Epoch() || as.PeerEpoch() != b.h.Epoch() || as.LocalIndex() == 0 || as.RemoteIndex() == 0 {
			t.Fatalf("session %+v", as)
		}
		if a.h.Pending() {
			t.Fatal("init still pending after its response")
		}
	})
}

// TestHandshakeTamper flips every bit of an init and of a response: none
// is accepted, nothing changes, and the genuine message still is.
func TestHandshakeTamper(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	init := a.init(t)
	for i := range init {
		for bit := 0; bit < 8; bit++ {
			q := clone(init)
			q[i] ^= 1 << bit
			if o, err := b.handle(t, q); err == nil {
				t.Fatalf("init byte %d bit %d flipped: accepted %+v", i, bit, o)
			}
		}
	}
	o, err := b.handle(t, init)
	if err != nil {
		t.Fatalf("genuine init after tampered ones: %v", err)
	}
	resp := o.Reply
	for i := range resp {
		for bit := 0; bit < 8; bit++ {
			q := clone(resp)
			q[i] ^= 1 << bit
			if o, err := a.handle(t, q); err == nil {
				t.Fatalf("response byte %d bit %d flipped: accepted %+v", i, bit, o)
			}
		}
	}
	if _, err := a.handle(t, resp); err != nil {
		t.Fatalf("genuine response after tampered ones: %v", err)
	}
	// Cut or padded.
	for _, p := range [][]byte{init[:len(init)-1], append(clone(init), 0), resp[:len(resp)-1], append(clone(resp), 0), init[:len(greHdr)+10], nil} {
		if _, err := b.handle(t, p); err == nil {
			t.Fatalf("%d-byte packet accepted", len(p))
		}
	}
}

// TestHandshakeWrongKey: a message MAC'd under another configured key is a
// bad tag.
func TestHandshakeWrongKey(t *testing.T) {
	k := testKey()
	k[0] ^= 0xff
	c := &clock{ns: 1}
	other, _ := NewHandshake(Config{Key: k, Now: c.now, Rand: rand.NewChaCha8([32]byte{9})})
	p, _ := other.WriteInit(withGRE(InitPacketLen), len(greHdr))
	b := newEndpoint(t, 2, false)
	if _, err := b.handle(t, p); err != DropBadTag {
		t.Fatalf("init under another key: %v, want %v", err, DropBadTag)
	}
}

func TestHandshakeReplayedInit(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	init1, _ := connect(t, a, b)
	if _, err := b.handle(t, init1); err != DropStale {
		t.Fatalf("replayed init: %v, want %v", err, DropStale)
	}
	// A newer init is accepted; then the older one, never seen by b, is
	// still older than the last accepted.
	a.clock.ns += 10
	init2 := a.init(t)
	a.clock.ns += 10
	init3 := a.init(t)
	if _, err := b.handle(t, init3); err != nil {
		t.Fatal(err)
	}
	if _, err := b.handle(t, init2); err != DropStale {
		t.Fatalf("older init after a newer one: %v, want %v", err, DropStale)
	}
	// A clock standing still or going back still gives growing timestamps.
	a.clock.ns -= 1000
	init4 := a.init(t)
	if ts, ts3 := header.HandshakeInit(init4[len(greHdr)+14:]).Timestamp(), header.HandshakeInit(init3[len(greHdr)+14:]).Timestamp(); ts <= ts3 {
		t.Fatalf("timestamp %d after %d", ts, ts3)
	}
	if _, err := b.handle(t, init4); err != nil {
		t.Fatalf("init after the clock went back: %v", err)
	}
}

func TestHandshakeResponseMustAnswer(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	_, resp := connect(t, a, b)
	if _, err := a.handle(t, resp); err != DropUnexpected {
		t.Fatalf("replayed response: %v, want %v", err, DropUnexpected)
	}
	// A response to an init that a newer one replaced.
	a.clock.ns += 10
	old := a.init(t)
	o, err := b.handle(t, old)
	if err != nil {
		t.Fatal(err)
	}
	a.clock.ns += 10
	a.init(t)
	if _, err := a.handle(t, o.Reply); err != DropUnexpected {
		t.Fatalf("response to a replaced init: %v, want %v", err, DropUnexpected)
	}
	// A response from a third party (another epoch) holding the key but
	// naming another nonce, index or epoch: rewrite and re-MAC each.
	a.clock.ns += 10
	init := a.init(t)
	o, err = b.handle(t, init)
	if err != nil {
		t.Fatal(err)
	}
	for name, off := range map[string]int{"peer epoch": 16, "receiver index": 28, "init nonce": 48} {
		q := clone(o.Reply)
		q[len(greHdr)+header.SealedHeaderLen+off] ^= 1
		b.h.frame(q, len(greHdr)) // a valid MAC over the changed message
		if _, err := a.handle(t, q); err != DropUnexpected {
			t.Errorf("response with another %s: %v, want %v", name, err, DropUnexpected)
		}
	}
	if _, err := a.handle(t, o.Reply); err != nil {
		t.Fatalf("the genuine response: %v", err)
	}
}

// TestHandshakeSimultaneous: both ends send an init at once; whichever
// order the inits and responses cross in, the lower epoch's init wins and
// both hold one session, with matching keys.
func TestHandshakeSimultaneous(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		a, b := newEndpoint(t, seed, false), newEndpoint(t, seed+100, false)
		lo, hi := a, b
		if b.h.Epoch() < a.h.Epoch() {
			lo, hi = b, a
		}
		initLo, initHi := lo.init(t), hi.init(t)
		// Each receives the other's init.
		if _, err := lo.handle(t, initHi); err != DropRace {
			t.Fatalf("seed %d: the lower epoch answered the higher's init: %v", seed, err)
		}
		o, err := hi.handle(t, initLo)
		if err != nil || o.Reply == nil {
			t.Fatalf("seed %d: the higher epoch did not answer: %v", seed, err)
		}
		if hi.h.Pending() {
			t.Fatalf("seed %d: the higher epoch still waits for its own init", seed)
		}
		if _, err := lo.handle(t, o.Reply); err != nil {
			t.Fatalf("seed %d: response: %v", seed, err)
		}
		// The lost init, replayed later, does not start another session.
		if _, err := lo.handle(t, initHi); err != DropStale {
			t.Fatalf("seed %d: the lost init replayed: %v, want %v", seed, err, DropStale)
		}
		for _, pair := range [][2]*endpoint{{lo, hi}, {hi, lo}} {
			if _, err := pair[1].t.Open(pair[0].send(t, goldenInner), len(greHdr)); err != nil {
				t.Fatalf("seed %d: data after the race: %v", seed, err)
			}
		}
		if lo.t.Current().LocalIndex() != hi.t.Current().RemoteIndex() || !lo.t.Current().Initiator() {
			t.Fatalf("seed %d: not the lower epoch's session", seed)
		}
	}
}

// TestHandshakeRaceLostInit: the winner's init is lost; both retry after
// RetryAfter and agree.
func TestHandshakeRaceLostInit(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	lo, hi := a, b
	if b.h.Epoch() < a.h.Epoch() {
		lo, hi = b, a
	}
	lo.init(t) // lost
	initHi := hi.init(t)
	if _, err := lo.handle(t, initHi); err != DropRace {
		t.Fatal(err)
	}
	if lo.h.Due() || hi.h.Due() {
		t.Fatal("an init is due before RetryAfter")
	}
	lo.clock.ns += RetryAfter
	hi.clock.ns += RetryAfter
	if !lo.h.Due() || !hi.h.Due() {
		t.Fatal("no init due after RetryAfter")
	}
	connect(t, lo, hi)
}

func TestHandshakeReflected(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	init := a.init(t)
	if _, err := a.handle(t, init); err != DropReflected {
		t.Fatalf("own init: %v, want %v", err, DropReflected)
	}
	o, err := b.handle(t, init)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.handle(t, o.Reply); err != DropReflected {
		t.Fatalf("own response: %v, want %v", err, DropReflected)
	}
	if _, err := a.handle(t, o.Reply); err != nil {
		t.Fatalf("after the reflections: %v", err)
	}
}

func TestHandshakeEncryptMismatch(t *testing.T) {
	a, b := newEndpoint(t, 1, true), newEndpoint(t, 2, false)
	if _, err := b.handle(t, a.init(t)); err != DropMismatch {
		t.Fatalf("init with encrypt to a peer without: %v, want %v", err, DropMismatch)
	}
}

func TestHandshakePeerRestart(t *testing.T) {
	a, b := connected(t, false)
	b.clock.ns += 10
	o, err := a.handle(t, b.init(t))
	if err != nil || o.PeerRestarted {
		t.Fatalf("rehandshake with the same peer: restarted %v, %v", o.PeerRestarted, err)
	}
	b2 := newEndpoint(t, 3, false) // b restarted: new epoch, clock moved on
	b2.clock.ns = b.clock.ns + 1e9
	o, err = a.handle(t, b2.init(t))
	if err != nil || !o.PeerRestarted {
		t.Fatalf("init from a restarted peer: restarted %v, %v", o.PeerRestarted, err)
	}
	if o.Session.PeerEpoch() != b2.h.Epoch() {
		t.Fatal("session does not carry the new epoch")
	}
}

func TestNewHandshake(t *testing.T) {
	c := &clock{}
	if _, err := NewHandshake(Config{Now: c.now}); err == nil {
		t.Error("no key accepted")
	}
	if _, err := NewHandshake(Config{Key: testKey()}); err == nil {
		t.Error("no clock accepted")
	}
	// Zero epochs and indexes are drawn again.
	zeros := bytes.NewReader(append(make([]byte, 8), append(bytes.Repeat([]byte{1}, 8), append(make([]byte, 4), bytes.Repeat([]byte{2}, 4+16)...)...)...))
	h, err := NewHandshake(Config{Key: testKey(), Now: c.now, Rand: zeros})
	if err != nil || h.Epoch() != 0x0101010101010101 {
		t.Fatalf("epoch %x, %v", h.Epoch(), err)
	}
	p, err := h.WriteInit(withGRE(InitPacketLen), len(greHdr))
	if err != nil || header.HandshakeInit(p[len(greHdr)+14:]).SenderIndex() != 0x02020202 {
		t.Fatalf("index: %x, %v", p, err)
	}
	if _, err := h.WriteInit(withGRE(InitPacketLen-1), len(greHdr)); err != ErrNoRoom {
		t.Fatalf("short buffer: %v", err)
	}
	if _, err := NewHandshake(Config{Key: testKey(), Now: c.now, Rand: bytes.NewReader(nil)}); err == nil {
		t.Fatal("empty random source accepted")
	}
	if _, err := GenerateKey(bytes.NewReader(make([]byte, 32))); err == nil {
		t.Fatal("zero key generated")
	}
}

func TestDropReasons(t *testing.T) {
	seen := map[string]bool{}
	for d := Drop(1); d < NumDrops; d++ {
		r := d.Reason()
		if r == "unknown" || seen[r] {
			t.Errorf("drop %d: reason %q", d, r)
		}
		seen[r] = true
	}
	if NumDrops.Reason() != "unknown" || Drop(0).Reason() != "unknown" {
		t.Error("out-of-range reasons")
	}
}

// TestVerifierChecksWithoutState: a Verifier passes a genuine init and
// response, refuses a forged MAC, a wrong length and a session's packet,
// allocates nothing, and changes nothing of the handshake (the init still
// agrees a session afterwards).
func TestVerifierChecksWithoutState(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	v := b.h.NewVerifier()
	init := a.init(t)
	if err := v.Verify(init, len(greHdr)); err != nil {
		t.Fatalf("a genuine init: %v", err)
	}
	forged := append([]byte(nil), init...)
	forged[len(forged)-1] ^= 1
	if err := v.Verify(forged, len(greHdr)); !errors.Is(err, DropBadTag) {
		t.Errorf("a forged MAC: %v, want bad tag", err)
	}
	if err := v.Verify(init[:len(init)-1], len(greHdr)); !errors.Is(err, DropMalformed) {
		t.Errorf("a short init: %v, want malformed", err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = v.Verify(forged, len(greHdr)) }); n != 0 {
		t.Errorf("Verify allocates %v times", n)
	}
	o, err := b.handle(t, init)
	if err != nil || o.Reply == nil {
		t.Fatalf("the init after Verify: %v", err)
	}
	if err := a.h.NewVerifier().Verify(o.Reply, len(greHdr)); err != nil {
		t.Errorf("a genuine response: %v", err)
	}
}
