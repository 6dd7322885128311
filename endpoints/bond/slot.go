package bond

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tunbond/tunbond/tunnel/conn"
)

// errPathWaiting is Send's error while a path waits for its address or
// device.
var errPathWaiting = errors.New("path waiting for its address or device")

// errSlotClosed is a receiver's error once the slot is closed.
var errSlotClosed = errors.New("path closed")

// pathSlot is the uplink of a path that may come and go: its address may
// be missing at start (a modem down at boot), its device deleted and
// created again (a PPP or LTE reconnect), its address changed (DHCP). The
// engine sees one conn.Uplink for the path's whole life; the bond's
// watcher (members.go) puts a socket in (Join) or takes it out (Wait).
// While the path waits, Send fails and the receivers block.
type pathSlot struct {
	batch    int
	nrecv    int // receivers per uplink (an IPIP uplink has two sockets)
	cur      atomic.Pointer[slotUplink]
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced at every Join, Wait and Close
	closed   bool
	remote   netip.AddrPort // a UDP path's remote as last known, kept across sockets
	udp      bool
	waitWhy  atomic.Pointer[string] // why it waits, nil while joined
	joins    atomic.Uint64
	ifindex  int        // the device the socket is bound to (watcher)
	local    netip.Addr // the address the socket is bound to (watcher)
	recvOnce sync.Once
	recvs    []conn.ReceiveFunc
}

type slotUplink struct {
	u    conn.Uplink
	recv []conn.ReceiveFunc
}

func newPathSlot(batch, nrecv int, udp bool, remote netip.AddrPort) *pathSlot {
	s := &pathSlot{batch: batch, nrecv: nrecv, udp: udp, remote: remote, changed: make(chan struct{})}
	why := "not joined yet"
	s.waitWhy.Store(&why)
	return s
}

// Join puts u in the slot (closing the socket it replaces).
func (s *pathSlot) Join(u conn.Uplink, ifindex int, local netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		u.Close()
		return
	}
	if r, ok := u.(roamer); ok && s.remote.IsValid() {
		r.SetRemote(s.remote)
	}
	old := s.cur.Swap(&slotUplink{u: u, recv: u.Receivers()})
	s.ifindex, s.local = ifindex, local
	s.waitWhy.Store(nil)
	s.joins.Add(1)
	s.broadcastLocked()
	if old != nil {
		old.u.Close()
	}
}

// Wait takes the socket out (closing it): the path waits, for why.
func (s *pathSlot) Wait(why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.waitWhy.Store(&why)
	old := s.cur.Swap(nil)
	if old != nil {
		s.keepRemoteLocked(old.u)
		old.u.Close()
	}
	s.ifindex, s.local = 0, netip.Addr{}
	s.broadcastLocked()
}

// Waiting reports why the path waits, "" if it has a socket.
func (s *pathSlot) Waiting() string {
	if w := s.waitWhy.Load(); w != nil {
		return *w
	}
	return ""
}

func (s *pathSlot) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *pathSlot) keepRemoteLocked(u conn.Uplink) {
	if r, ok := u.(roamer); ok {
		if ap := r.Remote(); ap.IsValid() {
			s.remote = ap
		}
	}
}

func (s *pathSlot) Send(pkts [][]byte) (int, error) {
	c := s.cur.Load()
	if c == nil {
		return 0, errPathWaiting
	}
	return c.u.Send(pkts)
}

func (s *pathSlot) BatchSize() int { return s.batch }

// Receivers returns the path's receivers: each reads from the socket in
// the slot, waits while there is none, and moves to the next socket when
// the one it read from is replaced.
func (s *pathSlot) Receivers() []conn.ReceiveFunc {
	s.recvOnce.Do(func() {
		for i := 0; i < s.nrecv; i++ {
			s.recvs = append(s.recvs, func(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
				return s.receive(i, bufs, sizes, from)
			})
		}
	})
	return s.recvs
}

func (s *pathSlot) receive(i int, bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	for {
		s.mu.Lock()
		c, changed, closed := s.cur.Load(), s.changed, s.closed
		s.mu.Unlock()
		if closed {
			return 0, errSlotClosed
		}
		if c == nil || i >= len(c.recv) {
			<-changed
			continue
		}
		n, err := c.recv[i](bufs, sizes, from)
		if err != nil && s.cur.Load() != c {
			continue // its socket was taken out under it: go on with the next, or wait
		}
		return n, err
	}
}

// Remote is a UDP path's remote as it stands.
func (s *pathSlot) Remote() netip.AddrPort {
	if c := s.cur.Load(); c != nil {
		if r, ok := c.u.(roamer); ok {
			return r.Remote()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.remote
}

// SetRemote moves a UDP path's remote (kept for the next socket too).
func (s *pathSlot) SetRemote(ap netip.AddrPort) {
	s.mu.Lock()
	s.remote = ap
	s.mu.Unlock()
	if c := s.cur.Load(); c != nil {
		if r, ok := c.u.(roamer); ok {
			r.SetRemote(ap)
		}
	}
}

func (s *pathSlot) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	old := s.cur.Swap(nil)
	s.broadcastLocked()
	if old != nil {
		return old.u.Close()
	}
	return nil
}

// Roams reports whether the path's remote may follow the peer (UDP).
func (s *pathSlot) Roams() bool { return s.udp }

// OnUDP reports whether an auto path sends over UDP (false for the others,
// or while it waits).
func (s *pathSlot) OnUDP() bool {
	if c := s.cur.Load(); c != nil {
		if f, ok := c.u.(fallback); ok {
			return f.OnUDP()
		}
	}
	return false
}

// UseUDP makes an auto path send over UDP from now on.
func (s *pathSlot) UseUDP(why string) {
	if c := s.cur.Load(); c != nil {
		if f, ok := c.u.(fallback); ok {
			f.UseUDP(why)
		}
	}
}
