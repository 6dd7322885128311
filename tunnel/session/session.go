package session

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Tailroom is the space Seal needs after the inner packet, for the tag.
const Tailroom = header.SealedTagLen

// sessionInfo starts the HKDF info of the session keys.
const sessionInfo = "tunbond v1"

// Role labels end the HKDF info of each direction's key.
const (
	labelInitToResp = "i>r"
	labelRespToInit = "r>i"
)

// DeriveKeys returns the session keys agreed by a handshake, one per
// direction: HKDF-SHA256 with the configured key as input, both nonces
// (the init's, then the response's) as salt, and as info "tunbond v1",
// the initiator's and the responder's epochs (8 bytes each, big endian)
// and "i>r" or "r>i".
func DeriveKeys(key Key, initNonce, respNonce [header.HandshakeNonceLen]byte, initEpoch, respEpoch uint64) (initToResp, respToInit [chacha20poly1305.KeySize]byte) {
	var salt [2 * header.HandshakeNonceLen]byte
	copy(salt[:], initNonce[:])
	copy(salt[header.HandshakeNonceLen:], respNonce[:])
	info := make([]byte, 0, len(sessionInfo)+16+3)
	info = append(info, sessionInfo...)
	info = binary.BigEndian.AppendUint64(info, initEpoch)
	info = binary.BigEndian.AppendUint64(info, respEpoch)
	prk := hkdf.Extract(sha256.New, key[:], salt[:])
	expand := func(label string, out []byte) {
		if _, err := io.ReadFull(hkdf.Expand(sha256.New, prk, append(info, label...)), out); err != nil {
			panic(err) // 32 bytes of HKDF-SHA256 cannot fail
		}
	}
	expand(labelInitToResp, initToResp[:])
	expand(labelRespToInit, respToInit[:])
	return
}

// Session is one session agreed by a handshake: the receiver indexes of
// both ends, their epochs, a key and a counter per direction and the
// receive direction's replay window. Seal and Open may be called from any
// number of goroutines.
type Session struct {
	local, remote    uint32 // our receiver index (on packets to us), the peer's
	epoch, peerEpoch uint64
	initiator        bool
	encrypt          bool
	send, recv       cipher.AEAD
	sendCounter      atomic.Uint64 // the next counter to send
	mu               sync.Mutex
	window           Window
}

func newSession(send, recv [chacha20poly1305.KeySize]byte, local, remote uint32, epoch, peerEpoch uint64, initiator, encrypt bool) *Session {
	s := &Session{local: local, remote: remote, epoch: epoch, peerEpoch: peerEpoch, initiator: initiator, encrypt: encrypt}
	var err error
	if s.send, err = chacha20poly1305.New(send[:]); err != nil {
		panic(err) // the key has KeySize bytes
	}
	if s.recv, err = chacha20poly1305.New(recv[:]); err != nil {
		panic(err)
	}
	return s
}

// LocalIndex is the receiver index packets to us carry.
func (s *Session) LocalIndex() uint32 { return s.local }

// RemoteIndex is the receiver index our packets carry.
func (s *Session) RemoteIndex() uint32 { return s.remote }

// Epoch is our epoch, PeerEpoch the peer's, as the handshake agreed them.
func (s *Session) Epoch() uint64     { return s.epoch }
func (s *Session) PeerEpoch() uint64 { return s.peerEpoch }

// Initiator reports whether we sent the init that agreed the session.
func (s *Session) Initiator() bool { return s.initiator }

// Encrypt reports whether the session encrypts the inner packet.
func (s *Session) Encrypt() bool { return s.encrypt }

// ErrExhausted is returned by Seal once the session has sent
// RejectAfterMessages packets: the caller must handshake again.
var ErrExhausted = errors.New("session: counter exhausted, a new handshake is needed")

// ErrNoRoom is returned by Seal when the buffer lacks the headroom or the
// tailroom sealing needs.
var ErrNoRoom = errors.New("session: no room in the buffer for the sealed header and tag")

// nonces holds 12-byte AEAD nonces: a nonce on the stack escapes through
// the cipher.AEAD interface, one allocation per packet; from the pool it
// costs none. Bytes 0-3 stay zero.
var nonces = sync.Pool{New: func() any { return new([chacha20poly1305.NonceSize]byte) }}

// Seal seals the inner packet buf[off:off+n] in place and returns the
// sealed packet, GRE header included: buf[off-SealedHeaderLen-hdr :
// off+n+Tailroom].
//
// The hdr bytes in front of buf[off-SealedHeaderLen] must already hold the
// GRE header as it will be sent, protocol type header.EtherTypeSealed and
// no checksum (a checksum would be computed after the tag; the tag makes it
// redundant): they are authenticated with the sealed header. Seal writes
// the sealed header (the peer's receiver index, the next counter,
// innerType) in front of the inner packet and the tag after it; with
// encrypt, the inner packet is encrypted in place, else it is only
// authenticated.
func (s *Session) Seal(buf []byte, off, n, hdr int, innerType uint16) ([]byte, error) {
	start := off - header.SealedHeaderLen - hdr
	if hdr < 0 || n < 0 || start < 0 || off+n+Tailroom > len(buf) {
		return nil, ErrNoRoom
	}
	c := s.sendCounter.Add(1) - 1
	if c >= RejectAfterMessages {
		s.sendCounter.Store(RejectAfterMessages)
		return nil, ErrExhausted
	}
	sh := header.Sealed(buf[off-header.SealedHeaderLen:])
	header.SealedFields{ReceiverIndex: s.remote, Counter: c, InnerType: innerType}.Encode(sh)
	nonce := nonces.Get().(*[chacha20poly1305.NonceSize]byte)
	binary.BigEndian.PutUint64(nonce[4:], c)
	if s.encrypt {
		s.send.Seal(buf[off:off], nonce[:], buf[off:off+n], buf[start:off])
	} else {
		s.send.Seal(buf[off+n:off+n], nonce[:], nil, buf[start:off+n])
	}
	nonces.Put(nonce)
	return buf[start : off+n+Tailroom], nil
}

// Open authenticates (and with encrypt decrypts) in place the sealed
// packet pkt, whose first hdr bytes are its GRE header, and returns the
// inner packet (a slice of pkt) and its type. A packet that fails returns
// a Drop: DropTooShort, DropUnknownIndex (not this session's index),
// DropCounterLimit, DropTooOld, DropReplayed, DropBadTag. Nothing of a
// failed packet may be used; with encrypt, its inner bytes are garbage.
func (s *Session) Open(pkt []byte, hdr int) ([]byte, uint16, error) {
	if hdr < 0 || len(pkt) < hdr+header.SealedOverhead {
		return nil, 0, DropTooShort
	}
	sh := header.Sealed(pkt[hdr:])
	if sh.ReceiverIndex() != s.local {
		return nil, 0, DropUnknownIndex
	}
	c := sh.Counter()
	s.mu.Lock()
	d := s.window.Check(c) // before the tag: a replay costs no crypto
	s.mu.Unlock()
	if d != 0 {
		return nil, 0, d
	}
	nonce := nonces.Get().(*[chacha20poly1305.NonceSize]byte)
	binary.BigEndian.PutUint64(nonce[4:], c)
	inner := pkt[hdr+header.SealedHeaderLen : len(pkt)-header.SealedTagLen]
	var err error
	if s.encrypt {
		ct := pkt[hdr+header.SealedHeaderLen:]
		_, err = s.recv.Open(ct[:0], nonce[:], ct, pkt[:hdr+header.SealedHeaderLen])
	} else {
		tag := sh.Tag()
		_, err = s.recv.Open(tag[:0], nonce[:], tag, pkt[:len(pkt)-header.SealedTagLen])
	}
	nonces.Put(nonce)
	if err != nil {
		return nil, 0, DropBadTag
	}
	s.mu.Lock()
	d = s.window.Accept(c) // again: another goroutine may have opened the same counter meanwhile
	s.mu.Unlock()
	if d != 0 {
		return nil, 0, d
	}
	return inner, sh.InnerType(), nil
}

// ErrNotOurs is returned by Reseal for a packet another session sealed.
var ErrNotOurs = errors.New("session: the packet was sealed under another session")

// Reseal seals again, in place and under the next counter, the whole
// sealed packet pkt (its first hdr bytes are its GRE header) that this
// session sealed before: a packet kept to be re-sent, which the peer's
// replay window would drop under its first counter. With encrypt the
// inner is first decrypted under the old counter.
func (s *Session) Reseal(pkt []byte, hdr int) error {
	if hdr < 0 || len(pkt) < hdr+header.SealedOverhead {
		return ErrNoRoom
	}
	sh := header.Sealed(pkt[hdr:])
	if sh.ReceiverIndex() != s.remote {
		return ErrNotOurs
	}
	off, n := hdr+header.SealedHeaderLen, len(pkt)-hdr-header.SealedOverhead
	if s.encrypt {
		nonce := nonces.Get().(*[chacha20poly1305.NonceSize]byte)
		binary.BigEndian.PutUint64(nonce[4:], sh.Counter())
		ct := pkt[off:]
		_, err := s.send.Open(ct[:0], nonce[:], ct, pkt[:off])
		nonces.Put(nonce)
		if err != nil {
			return err
		}
	}
	_, err := s.Seal(pkt, off, n, hdr, sh.InnerType())
	return err
}
