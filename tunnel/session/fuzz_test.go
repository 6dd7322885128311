package session

import (
	"bytes"
	"testing"

	"github.com/tunbond/tunbond/tunnel/header"
)

// fuzzPackets are genuine sealed packets from a golden-keyed session to
// index 0x01020304: auth-only first, then encrypted. Each fuzz input gets
// fresh sessions, so each genuine packet opens once per input.
func fuzzPackets() (auth, enc [][]byte) {
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
	for _, e := range []bool{false, true} {
		s := newSession(i2r, r2i, 0x0a0b0c0d, 0x01020304, 1, 2, true, e)
		for i, inner := range [][]byte{goldenInner, nil, bytes.Repeat([]byte{0x60}, 40)} {
			buf, off := sealBuf(inner)
			typ := []uint16{header.EtherTypeIPv4, header.EtherTypeControl, header.EtherTypeIPv6}[i]
			p, _ := s.Seal(buf, off, len(inner), len(greHdr), typ)
			if e {
				enc = append(enc, p)
			} else {
				auth = append(auth, p)
			}
		}
	}
	return auth, enc
}

// FuzzOpen feeds arbitrary GRE packets to a receiver's table: Open must
// drop them with a reason or return an inner slice inside the packet, and
// only a genuine packet ever opens.
func FuzzOpen(f *testing.F) {
	auth, enc := fuzzPackets()
	for _, p := range append(auth, enc...) {
		f.Add(p)
	}
	f.Add(flip(auth[0], 30))
	f.Add(auth[0][:len(greHdr)+header.SealedOverhead-1])
	f.Add(withIndex(enc[0], 0))
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
	f.Fuzz(func(t *testing.T, pkt []byte) {
		g := header.GRE(pkt)
		if g.Validate() != nil {
			return
		}
		hdr := g.HeaderLen()
		for _, e := range []bool{false, true} {
			var tab Table
			tab.Install(newSession(r2i, i2r, 0x01020304, 0x0a0b0c0d, 2, 1, false, e))
			q := clone(pkt)
			o, err := tab.Open(q, hdr)
			if err != nil {
				if _, ok := err.(Drop); !ok {
					t.Fatalf("error %v is not a Drop", err)
				}
				continue
			}
			genuine := auth
			if e {
				genuine = enc
			}
			found := false
			for _, p := range genuine {
				found = found || bytes.Equal(p, pkt)
			}
			if !found {
				t.Fatalf("forged packet opened: %x", pkt)
			}
			if len(o.Inner) != len(q)-hdr-header.SealedOverhead || (len(o.Inner) > 0 && &o.Inner[0] != &q[hdr+header.SealedHeaderLen]) {
				t.Fatalf("inner %d bytes not in place in a %d-byte packet", len(o.Inner), len(q))
			}
		}
	})
}

// fuzzEndpoints are the golden handshake's endpoints, a with its init
// pending, b fresh; and their genuine messages: a's init, b's response to
// it, b's own init.
func fuzzEndpoints(t testing.TB) (a, b *endpoint, initA, respB, initB []byte) {
	a, b = newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	initA = a.init(t)
	o, err := b.h.Handle(clone(initA), len(greHdr), withGRE(ResponsePacketLen), len(greHdr))
	if err != nil {
		t.Fatal(err)
	}
	b2 := newEndpoint(t, 2, false)
	b2.clock.ns += 5
	return a, b2, initA, o.Reply, b2.init(t)
}

// FuzzHandshake feeds arbitrary GRE packets to a handshake with an init
// pending: Handle must drop them with a reason, or accept only a genuine
// init or response, never panic.
func FuzzHandshake(f *testing.F) {
	_, _, initA, respB, initB := fuzzEndpoints(f)
	for _, p := range [][]byte{initA, respB, initB, flip(respB, 60), initB[:40]} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		g := header.GRE(pkt)
		if g.Validate() != nil {
			return
		}
		a, _, _, respB, initB := fuzzEndpoints(t)
		o, err := a.h.Handle(clone(pkt), g.HeaderLen(), withGRE(ResponsePacketLen), len(greHdr))
		if err != nil {
			if _, ok := err.(Drop); !ok {
				t.Fatalf("error %v is not a Drop", err)
			}
			if o.Session != nil || o.Reply != nil {
				t.Fatalf("dropped, yet %+v", o)
			}
			return
		}
		if !bytes.Equal(pkt, respB) && !bytes.Equal(pkt, initB) {
			t.Fatalf("forged handshake accepted: %x", pkt)
		}
		if o.Session == nil {
			t.Fatal("accepted without a session")
		}
	})
}

// FuzzHandshakeViews checks the views alone: a message that validates
// re-encodes from its fields to the same bytes.
func FuzzHandshakeViews(f *testing.F) {
	_, _, initA, respB, _ := fuzzEndpoints(f)
	f.Add(initA[len(greHdr)+header.SealedHeaderLen : len(initA)-header.SealedTagLen])
	f.Add(respB[len(greHdr)+header.SealedHeaderLen : len(respB)-header.SealedTagLen])
	f.Add(make([]byte, header.HandshakeInitLen))
	f.Fuzz(func(t *testing.T, m []byte) {
		if header.HandshakeInit(m).Validate() == nil {
			out := make([]byte, header.HandshakeInitLen)
			header.HandshakeInit(m).Fields().Encode(out)
			if !bytes.Equal(out, m) {
				t.Fatalf("init %x re-encodes to %x", m, out)
			}
		}
		if header.HandshakeResponse(m).Validate() == nil {
			out := make([]byte, header.HandshakeResponseLen)
			header.HandshakeResponse(m).Fields().Encode(out)
			if !bytes.Equal(out, m) {
				t.Fatalf("response %x re-encodes to %x", m, out)
			}
		}
		if header.Sealed(m).Validate() == nil {
			s := header.Sealed(m)
			_ = len(s.Inner()) + len(s.Tag()) + int(s.InnerType()) + int(s.Counter()) + int(s.ReceiverIndex())
		}
	})
}
