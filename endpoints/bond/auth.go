package bond

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"
)

// AuthConfig turns on authenticated sessions (auth.key_file): every packet
// is sealed (docs/wire-format.md, "Sealed packets") under a session a
// handshake agreed, and nothing that fails to open reaches the reorder
// buffer, the paths' state or the TUN.
type AuthConfig struct {
	Key     session.Key
	Encrypt bool // encrypt the inner packets too
	// AllowedSources are the inner source addresses accepted from the peer
	// (as WireGuard's AllowedIPs); empty: any.
	AllowedSources []netip.Prefix
}

// Drop reasons of the auth layer beyond session.Drop's, counted with them
// per path (rx_dropped_total's reason label).
const (
	dropNotSealed  = session.NumDrops + iota // a plain GRE packet where auth is on, or a sealed one where it is off
	dropNotAllowed                           // an inner source outside auth.allowed_sources
	dropNoSession                            // sent: data or a keepalive before the first handshake
	numAuthDrops
)

func authDropReason(d int) string {
	switch d {
	case int(dropNotSealed):
		return "not_sealed"
	case int(dropNotAllowed):
		return "source_not_allowed"
	case int(dropNoSession):
		return "no_session"
	}
	return session.Drop(d).Reason()
}

// kindRefused is an authentic data packet the policy refused: its
// sequence goes to the reorder buffer (as refused), nothing to the TUN.
const kindRefused encap.Kind = 100

// auth is the engine's session state: the handshake (serialised by mu, as
// any receive loop may hand it a message) and the sessions by index.
type auth struct {
	cfg     AuthConfig
	gre     encap.GRE
	mu      sync.Mutex
	hs      *session.Handshake
	table   session.Table
	scratch []byte // handshake messages out, under mu

	handshakes atomic.Uint64 // sessions agreed
	agreedNs   atomic.Int64  // when the latest was (engine clock)
	noSession  atomic.Uint64 // packets not sent for want of a session
}

// wallClock is the handshake's clock: init timestamps must grow across
// restarts, which a test's clock need not do.
func wallClock() int64 { return time.Now().UnixNano() }

func newAuth(cfg AuthConfig, gre encap.GRE) (*auth, error) {
	hs, err := session.NewHandshake(session.Config{Key: cfg.Key, Encrypt: cfg.Encrypt, Now: wallClock})
	if err != nil {
		return nil, err
	}
	return &auth{cfg: cfg, gre: gre, hs: hs, scratch: make([]byte, encap.Headroom+session.ResponsePacketLen)}, nil
}

// sealedHeadroom is where a sealed control message starts in a control
// scratch buffer: after the room an unsealed one's inner IPv4 header takes.
const sealedControlOff = encap.Headroom + header.IPv4HeaderLen

// sealData seals the inner packet buf[off:off+n] with its bond sequence and
// returns the packet to send, nil (counted) if there is no session yet.
func (a *auth) sealData(buf []byte, off, n int, seq uint32) []byte {
	s := a.table.Current()
	if s == nil {
		a.noSession.Add(1)
		return nil
	}
	et := a.gre.PayloadType(buf[off : off+n])
	if et == 0 {
		return nil
	}
	so := off - header.SealedHeaderLen
	hdr := a.gre.SealedHeader(buf, so, seq, true)
	pkt, err := s.Seal(buf, off, n, hdr, et)
	if err != nil {
		a.noSession.Add(1) // exhausted: the next handshake brings a new session
		return nil
	}
	return pkt
}

// sealControl seals the control message of n bytes at
// scratch[sealedControlOff:] and returns the packet to send, nil if there
// is no session yet.
func (a *auth) sealControl(scratch []byte, n int) []byte {
	s := a.table.Current()
	if s == nil {
		a.noSession.Add(1)
		return nil
	}
	so := sealedControlOff - header.SealedHeaderLen
	hdr := a.gre.SealedHeader(scratch, so, 0, false)
	pkt, err := s.Seal(scratch, sealedControlOff, n, hdr, header.EtherTypeControl)
	if err != nil {
		return nil
	}
	return pkt
}

// reseal seals again a kept data packet (a copy) before it is re-sent.
func (a *auth) reseal(pkt []byte) bool {
	s := a.table.Current()
	if s == nil {
		return false
	}
	hdr := header.GRE(pkt).HeaderLen()
	return s.Reseal(pkt, hdr) == nil
}

// allowed reports whether the inner packet's source may come from the peer
// (in l2 mode, the source of the IP packet a frame carries; of the frames
// without one, ARP alone passes: an IP packet behind three VLAN tags, PPPoE
// or MPLS would pass unchecked otherwise).
func (a *auth) allowed(inner []byte) bool {
	if len(a.cfg.AllowedSources) == 0 {
		return true
	}
	if a.gre.Frames {
		ip := header.FramePayload(inner)
		if ip == nil {
			t, _ := header.FrameType(inner)
			return t == header.EtherTypeARP
		}
		inner = ip
	}
	src, _, ok := header.Addrs(inner)
	if !ok {
		return false
	}
	for _, p := range a.cfg.AllowedSources {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

// writeInit writes a new init into the handshake scratch and returns it;
// the caller holds a.mu and sends it on every path with a remote.
func (a *auth) writeInit() ([]byte, error) {
	so := encap.Headroom
	hdr := a.gre.SealedHeader(a.scratch, so, 0, false)
	return a.hs.WriteInit(a.scratch[so-hdr:], hdr)
}

// openSealed opens the sealed packet d found in buf (received on p, from
// from on a UDP path) and returns what it holds as a plain Decoded: data or
// a control message. A handshake message is handled here (answered on p);
// anything that fails is counted on p and dropped.
func (e *Engine) openSealed(p *enginePath, buf []byte, d encap.Decoded, from netip.AddrPort, v *session.Verifier) (encap.Decoded, bool) {
	a := e.auth
	pkt := buf[d.Off : d.Off+d.Len]
	if len(pkt) >= d.Hdr+header.SealedOverhead && header.Sealed(pkt[d.Hdr:]).ReceiverIndex() == header.SealedHandshakeIndex {
		if err := v.Verify(pkt, d.Hdr); err != nil { // before the handshake's lock: forged ones cost no contention
			countDrop(p, err)
			return encap.Decoded{}, false
		}
		e.onHandshake(p, pkt, d.Hdr, from)
		return encap.Decoded{}, false
	}
	o, err := a.table.Open(pkt, d.Hdr)
	if err != nil {
		countDrop(p, err)
		return encap.Decoded{}, false
	}
	off := d.Off + d.Hdr + header.SealedHeaderLen
	switch o.Type {
	case header.EtherTypeControl:
		if header.Control(o.Inner).Validate() != nil {
			p.decode[header.ErrControl].Add(1)
			return encap.Decoded{}, false
		}
		return encap.Decoded{Kind: encap.KindControl, Off: off, Len: header.Control(o.Inner).Len()}, true
	case header.EtherTypeIPv4, header.EtherTypeIPv6, header.EtherTypeTEB:
		if a.gre.PayloadType(o.Inner) != o.Type {
			p.decode[header.ErrInnerProto].Add(1)
			return encap.Decoded{}, false
		}
		if !d.HasSeq {
			p.decode[header.ErrNoSeq].Add(1)
			return encap.Decoded{}, false
		}
		if !a.allowed(o.Inner) {
			p.authDrops[dropNotAllowed].Add(1)
			return encap.Decoded{Kind: kindRefused, Seq: d.Seq, HasSeq: true}, true
		}
		return encap.Decoded{Kind: encap.KindData, Off: off, Len: len(o.Inner), Seq: d.Seq, HasSeq: true}, true
	}
	p.decode[header.ErrInnerProto].Add(1)
	return encap.Decoded{}, false
}

// onHandshake hands a handshake message to the handshake: an init it
// accepts is answered on every path, p first; a session agreed is
// installed.
func (e *Engine) onHandshake(p *enginePath, pkt []byte, hdr int, from netip.AddrPort) {
	a := e.auth
	a.mu.Lock()
	so := encap.Headroom
	rh := a.gre.SealedHeader(a.scratch, so, 0, false)
	o, err := a.hs.Handle(pkt, hdr, a.scratch[so-rh:], rh)
	if err != nil {
		countDrop(p, err)
		if errors.Is(err, session.DropRace) {
			// Our init wins the race, but the peer sent its own: it may
			// never have had ours (it started after we sent it). Send
			// ours again now rather than after session.RetryAfter.
			e.sendInitLocked()
		}
		a.mu.Unlock()
		return
	}
	e.follow(p, from) // authentic and fresh (a replayed init is stale)
	if o.Session != nil {
		// Installed before the reply leaves: the initiator seals under it
		// as soon as the reply arrives, and the other receive loops must
		// know it by then.
		a.table.Install(o.Session)
		a.agreedNs.Store(e.now().UnixNano())
		a.handshakes.Add(1)
	}
	if o.Reply != nil {
		// On every path, the one the init came on first: a path may carry
		// one way only (a firewall dropping what we send on it), and the
		// init's copies on the other paths are stale now, never answered.
		e.sendRaw(p, o.Reply)
		for _, q := range e.paths {
			if q != p {
				e.sendRaw(q, o.Reply)
			}
		}
	}
	a.mu.Unlock()
	if o.Session != nil {
		e.log.Info("session agreed", "path", p.Name, "initiator", o.Session.Initiator(),
			"peer_epoch", epochString(o.Session.PeerEpoch()), "encrypt", o.Session.Encrypt())
	}
}

// countDrop counts on p why a sealed or handshake packet was dropped (a
// session.Drop, returned unwrapped: no allocation per dropped packet).
func countDrop(p *enginePath, err error) {
	if d, ok := err.(session.Drop); ok && int(d) < len(p.authDrops) {
		p.authDrops[d].Add(1)
	}
}

// handshakeDue sends an init on every path when a session is needed and
// the last init has waited long enough (health goroutine). A session is
// needed when there is none, or when under the one there is no path is up
// and nothing authentic came for session.RetryAfter since it was agreed:
// the peer may have restarted behind paths that cannot reach us.
func (e *Engine) handshakeDue() {
	a := e.auth
	if cur := a.table.Current(); cur != nil {
		now := e.now().UnixNano()
		age := now - a.agreedNs.Load()
		if age < session.RetryAfter {
			return
		}
		// A session's keys are replaced every RekeyAfter, as WireGuard's:
		// by the side that began it, or by the other one if that side
		// lets it run a half longer.
		rekey := age >= int64(RekeyAfter) && cur.Initiator() || age >= int64(RekeyAfter*3/2)
		if !rekey {
			for _, p := range e.paths {
				if p.upNow.Load() || now-p.lastRxNs.Load() < session.RetryAfter {
					return
				}
			}
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hs.Due() {
		e.sendInitLocked()
	}
}

// RekeyAfter is how long a session's keys serve before a new handshake
// replaces them (WireGuard's REKEY_AFTER_TIME). Packets in flight under
// the old session still open: the table keeps it as the previous one.
const RekeyAfter = 2 * time.Minute

// sendInitLocked sends a new init on every path; e.auth.mu is held.
func (e *Engine) sendInitLocked() {
	pkt, err := e.auth.writeInit()
	if err != nil {
		e.log.Warn("handshake init", "err", err)
		return
	}
	for _, p := range e.paths {
		e.sendRaw(p, pkt)
	}
}

// follow moves a UDP path's remote to where an authenticated packet came
// from: the peer's NAT mapping changed, or a responder learns it.
func (e *Engine) follow(p *enginePath, from netip.AddrPort) {
	if p.roam == nil || from.Port() == 0 { // raw sockets do not roam
		return
	}
	if old := p.roam.Remote(); old != from {
		p.roam.SetRemote(from)
		p.roams.Add(1)
		e.log.Info("path's peer address changed", "path", p.Name, "from", old, "to", from)
	}
}

// sendRaw sends one ready packet on p. Its batch of one comes from a
// pool: a local escapes through the interface call, an allocation per
// keepalive, feedback or handshake message; the callers are several
// goroutines, so no one scratch will do.
func (e *Engine) sendRaw(p *enginePath, pkt []byte) {
	one := batchOfOne.Get().(*[1][]byte)
	one[0] = pkt
	if _, err := p.Uplink.Send(one[:]); err != nil && !notSendable(err) {
		p.txErrors.Add(1)
	}
	one[0] = nil
	batchOfOne.Put(one)
}

var batchOfOne = sync.Pool{New: func() any { return new([1][]byte) }}

// notSendable reports a send error that is a path's state, not a
// failure: it waits for its address or device, or has not learned its
// remote yet.
func notSendable(err error) bool {
	return errors.Is(err, errPathWaiting) || errors.Is(err, conn.ErrNoRemote)
}
