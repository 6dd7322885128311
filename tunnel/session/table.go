package session

import (
	"sync"
	"sync/atomic"

	"github.com/tunbond/tunbond/tunnel/header"
)

// Table holds the sessions a receiver knows by their index: the current
// one (what Seal uses), the next one (a responder's, until the initiator
// proves it holds it too) and the previous one (whose packets may still be
// in flight). Lookups are lock-free; Install and the promotion of next
// take a lock. Its zero value is empty and ready.
type Table struct {
	mu                      sync.Mutex
	current, next, previous atomic.Pointer[Session]
}

// Current is the session to seal with, nil before the first handshake.
func (t *Table) Current() *Session { return t.current.Load() }

// Install puts a session agreed by the handshake in the table. An
// initiator's session becomes current at once: the response proved the
// peer holds it. A responder's becomes current only if there is none yet,
// else it waits as next until a packet under it opens (Open promotes it),
// so that a replayed init cannot take the current session away.
func (t *Table) Install(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.current.Load()
	if s.initiator || cur == nil {
		t.previous.Store(cur)
		t.current.Store(s)
		t.next.Store(nil)
		return
	}
	t.next.Store(s)
}

// Opened is a packet that Open authenticated.
type Opened struct {
	Session *Session // the session it came under
	Inner   []byte   // the inner packet or control message, a slice of pkt
	Type    uint16   // its inner type (header.EtherType*)
}

// Open finds the session pkt names (its first hdr bytes are the GRE
// header) and opens pkt under it (Session.Open). A packet under next
// promotes next to current. A handshake message (index 0) is no session's:
// the caller gives those to Handshake.Handle.
func (t *Table) Open(pkt []byte, hdr int) (Opened, error) {
	if hdr < 0 || len(pkt) < hdr+header.SealedOverhead {
		return Opened{}, DropTooShort
	}
	idx := header.Sealed(pkt[hdr:]).ReceiverIndex()
	var s *Session
	isNext := false
	if idx != header.SealedHandshakeIndex {
		if cur := t.current.Load(); cur != nil && cur.local == idx {
			s = cur
		} else if nxt := t.next.Load(); nxt != nil && nxt.local == idx {
			s, isNext = nxt, true
		} else if prev := t.previous.Load(); prev != nil && prev.local == idx {
			s = prev
		}
	}
	if s == nil {
		return Opened{}, DropUnknownIndex
	}
	inner, typ, err := s.Open(pkt, hdr)
	if err != nil {
		return Opened{}, err
	}
	if isNext {
		t.promote(s)
	}
	return Opened{Session: s, Inner: inner, Type: typ}, nil
}

func (t *Table) promote(s *Session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.next.Load() != s {
		return // promoted already, or replaced by a newer handshake
	}
	t.previous.Store(t.current.Load())
	t.current.Store(s)
	t.next.Store(nil)
}
