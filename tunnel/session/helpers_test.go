package session

import (
	"encoding/hex"
	"math/rand/v2"
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

// greHdr is the GRE header of a sealed packet in the tests: K set,
// protocol 0x88b5, key 7.
var greHdr = mustHex("200088b5" + "00000007")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// testKey is 00 01 02 … 1f.
func testKey() Key {
	var k Key
	for i := range k {
		k[i] = byte(i)
	}
	return k
}

// clock is a settable fake clock.
type clock struct{ ns int64 }

func (c *clock) now() int64 { return c.ns }

// endpoint is one side: its handshake, table and clock.
type endpoint struct {
	h     *Handshake
	t     Table
	clock *clock
}

func newEndpoint(t testing.TB, seed uint64, encrypt bool) *endpoint {
	t.Helper()
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	c := &clock{ns: 1_700_000_000_000_000_000}
	h, err := NewHandshake(Config{Key: testKey(), Encrypt: encrypt, Now: c.now, Rand: rand.NewChaCha8(s)})
	if err != nil {
		t.Fatal(err)
	}
	return &endpoint{h: h, clock: c}
}

// withGRE returns a buffer of n bytes holding greHdr at its start.
func withGRE(n int) []byte {
	b := make([]byte, len(greHdr)+n)
	copy(b, greHdr)
	return b
}

func (e *endpoint) init(t testing.TB) []byte {
	t.Helper()
	p, err := e.h.WriteInit(withGRE(InitPacketLen), len(greHdr))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// handle gives pkt to e's handshake and installs the session it agrees.
func (e *endpoint) handle(t testing.TB, pkt []byte) (Outcome, error) {
	t.Helper()
	o, err := e.h.Handle(append([]byte(nil), pkt...), len(greHdr), withGRE(ResponsePacketLen), len(greHdr))
	if err == nil && o.Session != nil {
		e.t.Install(o.Session)
	}
	return o, err
}

// connect runs a handshake a → b and returns the init and response.
func connect(t testing.TB, a, b *endpoint) (init, resp []byte) {
	t.Helper()
	init = a.init(t)
	o, err := b.handle(t, init)
	if err != nil || o.Reply == nil || o.Session == nil {
		t.Fatalf("init: %+v, %v", o, err)
	}
	if o2, err := a.handle(t, o.Reply); err != nil || o2.Session == nil {
		t.Fatalf("response: %+v, %v", o2, err)
	}
	return init, o.Reply
}

// sealBuf returns a buffer with inner at offset off = len(greHdr)+14, the
// GRE header in front and tailroom behind, and off.
func sealBuf(inner []byte) ([]byte, int) {
	off := len(greHdr) + header.SealedHeaderLen
	b := make([]byte, off+len(inner)+Tailroom)
	copy(b, greHdr)
	copy(b[off:], inner)
	return b, off
}

// send seals inner on e's current session and returns the packet.
func (e *endpoint) send(t testing.TB, inner []byte) []byte {
	t.Helper()
	s := e.t.Current()
	if s == nil {
		t.Fatal("no current session")
	}
	b, off := sealBuf(inner)
	p, err := s.Seal(b, off, len(inner), len(greHdr), header.EtherTypeIPv4)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
