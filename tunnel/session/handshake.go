package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"hash"
	"io"

	"golang.org/x/crypto/hkdf"

	"github.com/tunbond/tunbond/tunnel/header"
)

// The handshake (control types 5 init and 6 response) agrees a session.
// Each side has an epoch, random and non-zero, drawn once per start; each
// session has a receiver index per side and a 16-byte random nonce per
// message. An init carries the initiator's timestamp (wall clock, ns),
// epoch, index and nonce; the response carries the responder's epoch,
// index and nonce and names the init it answers by the initiator's
// epoch, index and nonce. The session keys are DeriveKeys of the
// configured key, both nonces and both epochs.
//
// A handshake message is a sealed packet of receiver index 0 and counter
// 0 whose inner (type header.EtherTypeControl) is the message, in clear,
// and whose tag is HMAC-SHA256, truncated to 16 bytes, under HandshakeKey
// of the configured key, over the GRE header, the sealed header and the
// message. A MAC rather than a Poly1305 tag because the handshake key lives
// as long as the configured key and both ends send under it: a Poly1305
// tag would need a nonce never repeated by either end across restarts,
// which nothing here can promise; a MAC needs none.
//
// An init is accepted only if its timestamp is greater than that of every
// authentic init seen from the peer, so a replayed init is dropped
// (DropStale). A response is accepted only if it answers the init pending
// (DropUnexpected otherwise), so a replayed response is dropped too.
//
// Simultaneous inits: when an init arrives while one of ours is pending,
// the init from the lower epoch wins (an init of our own epoch is our own,
// reflected, and dropped: epochs are 64 random bits). The
// side whose init lost drops its pending init and answers; the winner drops
// the peer's (DropRace) and waits for the answer to its own. Both sides
// then hold the one session of the winner's init. If the winner's init was
// lost, both retry (Due) and meet again.

// handshakeInfo is the HKDF info of the handshake key.
const handshakeInfo = "tunbond v1 handshake"

// Handshake packet lengths after the GRE header.
const (
	InitPacketLen     = header.SealedHeaderLen + header.HandshakeInitLen + header.SealedTagLen
	ResponsePacketLen = header.SealedHeaderLen + header.HandshakeResponseLen + header.SealedTagLen
)

// RetryAfter is how long an init waits for its response before Due asks
// for another (ns).
const RetryAfter = int64(1e9)

// HandshakeKey is the key handshake messages are MAC'd with:
// HKDF-SHA256 of the configured key, no salt, info "tunbond v1 handshake".
func HandshakeKey(key Key) [32]byte {
	var k [32]byte
	if _, err := io.ReadFull(hkdf.New(sha256.New, key[:], nil, []byte(handshakeInfo)), k[:]); err != nil {
		panic(err)
	}
	return k
}

// Config is what a Handshake needs from its endpoint.
type Config struct {
	Key     Key
	Encrypt bool         // encrypt: true; both ends must agree
	Now     func() int64 // wall clock in ns (time.Now().UnixNano()); it must not go back across restarts
	Rand    io.Reader    // crypto/rand when nil
}

// Handshake is one endpoint's side of the handshake with its peer. It is
// not safe for concurrent use: the caller serialises Init, Handle and Due.
type Handshake struct {
	cfg     Config
	macKey  [32]byte
	own     *Verifier // frames and checks messages, under the caller's serialisation
	epoch   uint64
	lastTS  int64 // timestamp of our last init
	peerTS  int64 // greatest timestamp of an authentic init from the peer
	pending struct {
		ok     bool
		ts     int64
		index  uint32
		nonce  [header.HandshakeNonceLen]byte
		sentAt int64
	}
	peerEpoch uint64    // of the last session agreed, 0 before the first
	recent    [4]uint32 // indexes handed out lately, never drawn again
	nRecent   int
}

// NewHandshake draws the endpoint's epoch and returns its handshake.
func NewHandshake(cfg Config) (*Handshake, error) {
	if cfg.Key == (Key{}) {
		return nil, errors.New("session: no key")
	}
	if cfg.Now == nil {
		return nil, errors.New("session: no clock")
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	h := &Handshake{cfg: cfg, macKey: HandshakeKey(cfg.Key)}
	h.own = h.NewVerifier()
	for h.epoch == 0 {
		var b [8]byte
		if _, err := io.ReadFull(cfg.Rand, b[:]); err != nil {
			return nil, err
		}
		h.epoch = binary.BigEndian.Uint64(b[:])
	}
	return h, nil
}

// Epoch is this endpoint's epoch.
func (h *Handshake) Epoch() uint64 { return h.epoch }

// Pending reports whether an init of ours awaits its response.
func (h *Handshake) Pending() bool { return h.pending.ok }

// Due reports whether an init should be sent now: none is pending, or the
// pending one has waited RetryAfter. (Whether a session is needed at all
// is the caller's to know.)
func (h *Handshake) Due() bool {
	return !h.pending.ok || h.cfg.Now()-h.pending.sentAt >= RetryAfter
}

func (h *Handshake) flags() uint16 {
	if h.cfg.Encrypt {
		return header.HandshakeFlagEncrypt
	}
	return 0
}

// newIndex draws a receiver index: non-zero, none of the last few.
func (h *Handshake) newIndex() (uint32, error) {
	for {
		var b [4]byte
		if _, err := io.ReadFull(h.cfg.Rand, b[:]); err != nil {
			return 0, err
		}
		i := binary.BigEndian.Uint32(b[:])
		if i == header.SealedHandshakeIndex {
			continue
		}
		used := false
		for _, r := range h.recent[:h.nRecent] {
			used = used || r == i
		}
		if used {
			continue
		}
		if h.nRecent < len(h.recent) {
			h.nRecent++
		}
		copy(h.recent[1:], h.recent[:])
		h.recent[0] = i
		return i, nil
	}
}

// WriteInit writes a new init after the GRE header pkt[:hdr] (as it will
// be sent: protocol header.EtherTypeSealed, no checksum) and returns the
// packet, pkt[:hdr+InitPacketLen]. It replaces any pending init: a
// response to the old one is then dropped.
func (h *Handshake) WriteInit(pkt []byte, hdr int) ([]byte, error) {
	if hdr < 0 || len(pkt) < hdr+InitPacketLen {
		return nil, ErrNoRoom
	}
	index, err := h.newIndex()
	if err != nil {
		return nil, err
	}
	f := header.HandshakeInitFields{Flags: h.flags(), Epoch: h.epoch, SenderIndex: index}
	if _, err := io.ReadFull(h.cfg.Rand, f.Nonce[:]); err != nil {
		return nil, err
	}
	now := h.cfg.Now()
	f.Timestamp = max(now, h.lastTS+1)
	h.lastTS = f.Timestamp
	f.Encode(header.HandshakeInit(pkt[hdr+header.SealedHeaderLen:]))
	p := h.frame(pkt[:hdr+InitPacketLen], hdr)
	h.pending.ok, h.pending.ts, h.pending.index, h.pending.nonce, h.pending.sentAt = true, f.Timestamp, index, f.Nonce, now
	return p, nil
}

// frame writes the sealed header and the MAC around the message already
// in p after the GRE header p[:hdr].
func (h *Handshake) frame(p []byte, hdr int) []byte {
	header.SealedFields{ReceiverIndex: header.SealedHandshakeIndex, InnerType: header.EtherTypeControl}.Encode(header.Sealed(p[hdr:]))
	copy(p[len(p)-header.SealedTagLen:], h.own.tag(p[:len(p)-header.SealedTagLen]))
	return p
}

// Outcome is what Handle made of a handshake message.
type Outcome struct {
	// Session is the session agreed, for Table.Install; nil if none.
	Session *Session
	// Reply is the response to send back on the path the init came on (a
	// slice of the reply buffer given to Handle); nil if none.
	Reply []byte
	// PeerRestarted: the session's peer epoch differs from the last
	// session's. The caller resets what it holds of the peer's stream.
	PeerRestarted bool
}

// parse checks a handshake packet's framing and MAC and returns its
// message and control type. It is the decoder of network bytes the fuzz
// target drives.
func (h *Handshake) parse(pkt []byte, hdr int) ([]byte, uint8, error) {
	if err := h.own.Verify(pkt, hdr); err != nil {
		return nil, 0, err
	}
	sh := header.Sealed(pkt[hdr:])
	msg := sh.Inner()
	if sh.Counter() != 0 || sh.InnerType() != header.EtherTypeControl {
		return nil, 0, DropMalformed
	}
	typ := msg[5]
	switch {
	case typ == header.ControlHandshakeInit && header.HandshakeInit(msg).Validate() == nil:
	case typ == header.ControlHandshakeResponse && header.HandshakeResponse(msg).Validate() == nil:
	default:
		return nil, 0, DropMalformed
	}
	return msg, typ, nil
}

// Handle takes a handshake packet (receiver index 0; its first hdr bytes
// are the GRE header) and, for an init it accepts, writes the response
// after the GRE header reply[:replyHdr] (as it will be sent). It returns
// the session agreed, if any, or why the packet was dropped (a Drop). A
// dropped packet is never answered.
func (h *Handshake) Handle(pkt []byte, hdr int, reply []byte, replyHdr int) (Outcome, error) {
	msg, typ, err := h.parse(pkt, hdr)
	if err != nil {
		return Outcome{}, err
	}
	if typ == header.ControlHandshakeInit {
		return h.handleInit(header.HandshakeInit(msg), reply, replyHdr)
	}
	return h.handleResponse(header.HandshakeResponse(msg))
}

func (h *Handshake) handleInit(m header.HandshakeInit, reply []byte, replyHdr int) (Outcome, error) {
	in := m.Fields()
	if in.Epoch == h.epoch {
		return Outcome{}, DropReflected // our own init sent back: epochs are 64 random bits
	}
	if in.Timestamp <= h.peerTS {
		return Outcome{}, DropStale
	}
	h.peerTS = in.Timestamp // authentic and newer: whatever follows, it never counts again
	if in.Flags != h.flags() {
		return Outcome{}, DropMismatch
	}
	if h.pending.ok && h.epoch < in.Epoch { // simultaneous inits: ours wins
		return Outcome{}, DropRace
	}
	if replyHdr < 0 || len(reply) < replyHdr+ResponsePacketLen {
		return Outcome{}, ErrNoRoom
	}
	index, err := h.newIndex()
	if err != nil {
		return Outcome{}, err
	}
	f := header.HandshakeResponseFields{Flags: h.flags(), Epoch: h.epoch, PeerEpoch: in.Epoch,
		SenderIndex: index, ReceiverIndex: in.SenderIndex, InitNonce: in.Nonce}
	if _, err := io.ReadFull(h.cfg.Rand, f.Nonce[:]); err != nil {
		return Outcome{}, err
	}
	h.pending.ok = false // ours lost the race, if there was one
	f.Encode(header.HandshakeResponse(reply[replyHdr+header.SealedHeaderLen:]))
	p := h.frame(reply[:replyHdr+ResponsePacketLen], replyHdr)
	i2r, r2i := DeriveKeys(h.cfg.Key, in.Nonce, f.Nonce, in.Epoch, h.epoch)
	s := newSession(r2i, i2r, index, in.SenderIndex, h.epoch, in.Epoch, false, h.cfg.Encrypt)
	return Outcome{Session: s, Reply: p, PeerRestarted: h.agreed(in.Epoch)}, nil
}

func (h *Handshake) handleResponse(m header.HandshakeResponse) (Outcome, error) {
	r := m.Fields()
	if r.Epoch == h.epoch {
		return Outcome{}, DropReflected
	}
	if !h.pending.ok || r.PeerEpoch != h.epoch || r.ReceiverIndex != h.pending.index || r.InitNonce != h.pending.nonce {
		return Outcome{}, DropUnexpected
	}
	if r.Flags != h.flags() {
		return Outcome{}, DropMismatch
	}
	h.pending.ok = false
	i2r, r2i := DeriveKeys(h.cfg.Key, r.InitNonce, r.Nonce, h.epoch, r.Epoch)
	s := newSession(i2r, r2i, r.ReceiverIndex, r.SenderIndex, h.epoch, r.Epoch, true, h.cfg.Encrypt)
	return Outcome{Session: s, PeerRestarted: h.agreed(r.Epoch)}, nil
}

// agreed records the peer epoch of a new session and reports whether it
// differs from the last one's.
func (h *Handshake) agreed(peerEpoch uint64) bool {
	restarted := h.peerEpoch != 0 && h.peerEpoch != peerEpoch
	h.peerEpoch = peerEpoch
	return restarted
}

// Verifier checks a handshake packet's framing and MAC without touching the
// handshake's state: what a receive loop runs before it takes the lock the
// handshake needs, so a flood of forged handshakes costs each loop a MAC
// and no lock and no allocation. Not safe for concurrent use: one per
// goroutine.
type Verifier struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewVerifier returns a Verifier under this handshake's key.
func (h *Handshake) NewVerifier() *Verifier {
	return &Verifier{mac: hmac.New(sha256.New, h.macKey[:])}
}

// Verify reports why the handshake packet pkt (its first hdr bytes are the
// GRE header) is to be dropped, or nil if its framing and MAC are right.
func (v *Verifier) Verify(pkt []byte, hdr int) error {
	if hdr < 0 || len(pkt) < hdr+header.SealedOverhead+8 {
		return DropTooShort
	}
	sh := header.Sealed(pkt[hdr:])
	if sh.ReceiverIndex() != header.SealedHandshakeIndex {
		return DropUnknownIndex
	}
	if n := len(sh); n != InitPacketLen && n != ResponsePacketLen {
		return DropMalformed
	}
	if !hmac.Equal(v.tag(pkt[:len(pkt)-header.SealedTagLen]), sh.Tag()) {
		return DropBadTag
	}
	return nil
}

// tag is the truncated HMAC-SHA256 of b (valid until the next call).
func (v *Verifier) tag(b []byte) []byte {
	v.mac.Reset()
	v.mac.Write(b)
	return v.mac.Sum(v.sum[:0])[:header.SealedTagLen]
}
