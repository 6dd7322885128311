package session

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/tunbond/tunbond/tunnel/header"
)

// hkdfByHand is RFC 5869 HKDF-SHA256 for one 32-byte block, written from
// the RFC with crypto/hmac alone, to check DeriveKeys and HandshakeKey
// against something other than themselves.
func hkdfByHand(ikm, salt, info []byte) []byte {
	if salt == nil {
		salt = make([]byte, sha256.Size)
	}
	ext := hmac.New(sha256.New, salt)
	ext.Write(ikm)
	prk := ext.Sum(nil)
	exp := hmac.New(sha256.New, prk)
	exp.Write(info)
	exp.Write([]byte{1})
	return exp.Sum(nil)
}

var (
	goldenInitNonce = [16]byte{0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f}
	goldenRespNonce = [16]byte{0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, 0x2e, 0x2f}
)

const (
	goldenInitEpoch = 0x0102030405060708
	goldenRespEpoch = 0x1112131415161718
	goldenI2R       = "d75422c68b44cd4361d432c3218c61cfd2aa2a42698a360cb5c5997b3d3f57dd"
	goldenR2I       = "dacdadb7f3b3c05916b7ac3bca53fe9603596e949ced46d6b0ba2eafb4182ccd"
	goldenHSKey     = "42f49ebd4e65ac47d6fc8dea30c23a3e9a6ccb6ddfcf4bb0543d8bc38abe4dc0"
)

func TestDeriveKeysGolden(t *testing.T) {
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
	if got := hex.EncodeToString(i2r[:]); got != goldenI2R {
		t.Errorf("initiator → responder key %s, want %s", got, goldenI2R)
	}
	if got := hex.EncodeToString(r2i[:]); got != goldenR2I {
		t.Errorf("responder → initiator key %s, want %s", got, goldenR2I)
	}
	k := testKey()
	salt := append(goldenInitNonce[:], goldenRespNonce[:]...)
	info := append([]byte("tunbond v1"), mustHex("0102030405060708"+"1112131415161718")...)
	if want := hkdfByHand(k[:], salt, append(info, "i>r"...)); !bytes.Equal(i2r[:], want) {
		t.Errorf("i>r key is not HKDF-SHA256(key, salt=nonces, info=tunbond v1‖epochs‖i>r): %x", want)
	}
	if want := hkdfByHand(k[:], salt, append(info, "r>i"...)); !bytes.Equal(r2i[:], want) {
		t.Errorf("r>i key is not HKDF-SHA256(key, salt=nonces, info=tunbond v1‖epochs‖r>i): %x", want)
	}
	hk := HandshakeKey(testKey())
	if got := hex.EncodeToString(hk[:]); got != goldenHSKey {
		t.Errorf("handshake key %s, want %s", got, goldenHSKey)
	}
	if want := hkdfByHand(k[:], nil, []byte("tunbond v1 handshake")); !bytes.Equal(hk[:], want) {
		t.Errorf("handshake key is not HKDF-SHA256(key, info=tunbond v1 handshake): %x", want)
	}
	// Every input counts: another epoch, nonce or key gives other keys.
	for name, f := range map[string]func() ([32]byte, [32]byte){
		"init epoch": func() ([32]byte, [32]byte) {
			return DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch+1, goldenRespEpoch)
		},
		"resp epoch": func() ([32]byte, [32]byte) {
			return DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch+1)
		},
		"epochs swapped": func() ([32]byte, [32]byte) {
			return DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenRespEpoch, goldenInitEpoch)
		},
		"nonces swapped": func() ([32]byte, [32]byte) {
			return DeriveKeys(testKey(), goldenRespNonce, goldenInitNonce, goldenInitEpoch, goldenRespEpoch)
		},
		"key": func() ([32]byte, [32]byte) {
			k := testKey()
			k[31] ^= 1
			return DeriveKeys(k, goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
		},
	} {
		a, b := f()
		if a == i2r || b == r2i || a == b {
			t.Errorf("%s: the same keys", name)
		}
	}
}

// goldenInner is a 28-byte IPv4/UDP packet.
var goldenInner = mustHex("4500001c000040004011000a0a4d00010a4d00020400050000080000")

func TestSealGolden(t *testing.T) {
	i2r, r2i := DeriveKeys(testKey(), goldenInitNonce, goldenRespNonce, goldenInitEpoch, goldenRespEpoch)
	for _, tt := range []struct {
		name    string
		encrypt bool
		want    string
	}{
		// GRE header ‖ receiver index ‖ counter ‖ inner type ‖ inner ‖ tag
		{"auth only", false, "200088b500000007" + "01020304" + "0000000000000000" + "0800" +
			"4500001c000040004011000a0a4d00010a4d00020400050000080000" + "2d2b8773260d40a243fe35e9e9f5c4df"},
		{"encrypted", true, "200088b500000007" + "01020304" + "0000000000000000" + "0800" +
			"1b7c2a579db58919bc4ac8262bcbb8eb116413475c0f43af29e7a6bf" + "55a7b6449f75f032b7c4ad732e2a6561"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newSession(i2r, r2i, 0x0a0b0c0d, 0x01020304, goldenInitEpoch, goldenRespEpoch, true, tt.encrypt)
			buf, off := sealBuf(goldenInner)
			p, err := s.Seal(buf, off, len(goldenInner), len(greHdr), header.EtherTypeIPv4)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(p); got != tt.want {
				t.Fatalf("sealed\n %s\nwant\n %s", got, tt.want)
			}
			// The tag, by hand: nonce = 4 zero bytes ‖ counter, AD = GRE
			// header ‖ bytes 0-13 (‖ inner without encrypt).
			aead, _ := chacha20poly1305.New(i2r[:])
			var nonce [12]byte
			binary.BigEndian.PutUint64(nonce[4:], 0)
			hdr := p[:len(greHdr)+header.SealedHeaderLen]
			var want []byte
			if tt.encrypt {
				want = aead.Seal(append([]byte(nil), hdr...), nonce[:], goldenInner, hdr)
			} else {
				ad := append(append([]byte(nil), hdr...), goldenInner...)
				want = aead.Seal(ad, nonce[:], nil, ad)
			}
			if !bytes.Equal(p, want) {
				t.Fatalf("sealed packet is not ChaCha20-Poly1305 as documented:\n %x\nwant\n %x", p, want)
			}
			// The far end (keys the other way round) opens it.
			r := newSession(r2i, i2r, 0x01020304, 0x0a0b0c0d, goldenRespEpoch, goldenInitEpoch, false, tt.encrypt)
			inner, typ, err := r.Open(p, len(greHdr))
			if err != nil || typ != header.EtherTypeIPv4 || !bytes.Equal(inner, goldenInner) {
				t.Fatalf("Open = %x, %#x, %v", inner, typ, err)
			}
		})
	}
}

// The golden handshake: endpoint seeds 1 (initiator) and 2, the tests'
// clock, the GRE header 200088b5 00000007.
const (
	goldenInitPacket = "200088b500000007" + // GRE
		"00000000" + "0000000000000000" + "88b6" + // index 0, counter 0, control message
		"54424e44" + "01" + "05" + "0000" + // TBND v1 init, flags 0
		"17979cfe362a0000" + // timestamp 1.7e18 ns
		"6ae6783f4fbde91b" + // epoch
		"6eb88b73" + "00000000" + // sender index, reserved
		"a48ed247dbe5882e2579683432c1bfc5" + // nonce
		"ef90d49801d536afd2642c3cfba37140" // HMAC-SHA256/128
	goldenResponsePacket = "200088b500000007" +
		"00000000" + "0000000000000000" + "88b6" +
		"54424e44" + "01" + "06" + "0000" + // TBND v1 response, flags 0
		"1490066b778935b0" + // epoch
		"6ae6783f4fbde91b" + // peer epoch: the initiator's
		"bb4925e3" + "6eb88b73" + // sender index, receiver index: the init's sender index
		"db151c5b424ad7c63bdc307ad11f7e87" + // nonce
		"a48ed247dbe5882e2579683432c1bfc5" + // init nonce
		"fbae66ac5c9bf1f73da86d7d53f45add" // HMAC-SHA256/128
)

func TestHandshakeGolden(t *testing.T) {
	a, b := newEndpoint(t, 1, false), newEndpoint(t, 2, false)
	init, resp := connect(t, a, b)
	if got := hex.EncodeToString(init); got != goldenInitPacket {
		t.Errorf("init\n %s\nwant\n %s", got, goldenInitPacket)
	}
	if got := hex.EncodeToString(resp); got != goldenResponsePacket {
		t.Errorf("response\n %s\nwant\n %s", got, goldenResponsePacket)
	}
	hk := hkdfByHand(func() []byte { k := testKey(); return k[:] }(), nil, []byte("tunbond v1 handshake"))
	for name, p := range map[string][]byte{"init": init, "response": resp} {
		m := hmac.New(sha256.New, hk)
		m.Write(p[:len(p)-16])
		if want := m.Sum(nil)[:16]; !bytes.Equal(p[len(p)-16:], want) {
			t.Errorf("%s: tag %x is not HMAC-SHA256/128 over GRE header and message: %x", name, p[len(p)-16:], want)
		}
	}
	// The session both ends hold has the keys DeriveKeys gives for the
	// nonces and epochs on the wire.
	i2r, r2i := DeriveKeys(testKey(), [16]byte(init[54:70]), [16]byte(resp[54:70]), a.h.Epoch(), b.h.Epoch())
	as, bs := a.t.Current(), b.t.Current()
	want := newSession(i2r, r2i, as.local, as.remote, 0, 0, true, false)
	p1 := a.send(t, goldenInner)
	buf, off := sealBuf(goldenInner)
	p2, _ := want.Seal(buf, off, len(goldenInner), len(greHdr), header.EtherTypeIPv4)
	if !bytes.Equal(p1, p2) {
		t.Fatalf("initiator's session does not seal with DeriveKeys' i>r key")
	}
	if as.local != bs.remote || as.remote != bs.local || as.Epoch() != bs.PeerEpoch() || bs.Epoch() != as.PeerEpoch() {
		t.Fatalf("indexes or epochs disagree: %+v %+v", as, bs)
	}
}
