// Package conntest provides in-memory uplinks for testing the engine
// without root: a Pair of ChannelUplinks behaves like two raw sockets facing
// each other, handing the receiver whole outer IPv4 packets.
package conntest

import (
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/header"
)

// ChannelUplink is one end of an in-memory uplink.
type ChannelUplink struct {
	local, remote [4]byte
	protocols     []uint8
	in            chan []byte
	peer          atomic.Pointer[ChannelUplink]
	closed        chan struct{}
	closeOnce     sync.Once

	// Down makes Send drop everything, like a dead link.
	Down atomic.Bool
	// DropEvery, if not 0, makes Send drop every DropEvery-th packet, like
	// a lossy link.
	DropEvery atomic.Uint32
	sends     atomic.Uint64
	// Sent counts packets handed to the peer.
	Sent atomic.Uint64
	// Tap, when set, is called with each outer packet handed to the peer
	// (its own copy), as a capture on the wire would see it.
	Tap atomic.Pointer[func(pkt []byte)]
}

// Inject queues pkt, an outer IPv4 packet as from the wire, for this
// uplink's receiver; false if its queue is full.
func (u *ChannelUplink) Inject(pkt []byte) bool {
	select {
	case u.in <- append([]byte(nil), pkt...):
		return true
	default:
		return false
	}
}

// Pair returns two connected uplinks between addresses a and b that carry
// the outer protocols of an encapsulation (encap.Encapsulation.Protocols).
func Pair(a, b netip.Addr, protocols []uint8) (*ChannelUplink, *ChannelUplink) {
	x := &ChannelUplink{local: a.As4(), remote: b.As4(), protocols: protocols, in: make(chan []byte, 4096), closed: make(chan struct{})}
	y := &ChannelUplink{local: b.As4(), remote: a.As4(), protocols: protocols, in: make(chan []byte, 4096), closed: make(chan struct{})}
	x.peer.Store(y)
	y.peer.Store(x)
	return x, y
}

// Reopen closes u and returns a new end in its place, which the peer sends
// to from now on: a socket opened again after its device came back.
func (u *ChannelUplink) Reopen() *ChannelUplink {
	u.Close()
	n := &ChannelUplink{local: u.local, remote: u.remote, protocols: u.protocols, in: make(chan []byte, 4096), closed: make(chan struct{})}
	peer := u.peer.Load()
	n.peer.Store(peer)
	peer.peer.Store(n)
	return n
}

// Closed reports whether Close was called.
func (u *ChannelUplink) Closed() bool {
	select {
	case <-u.closed:
		return true
	default:
		return false
	}
}

func (u *ChannelUplink) BatchSize() int { return 32 }

// Send wraps each packet in an outer IPv4 header and queues it at the peer;
// a full queue drops, as a socket buffer would.
func (u *ChannelUplink) Send(pkts [][]byte) (int, error) {
	select {
	case <-u.closed:
		return 0, errors.New("conntest: closed")
	default:
	}
	if u.Down.Load() {
		return len(pkts), nil
	}
	for _, p := range pkts {
		if n := uint64(u.DropEvery.Load()); n != 0 && u.sends.Add(1)%n == 0 {
			continue
		}
		proto := u.protocols[0]
		if len(u.protocols) > 1 { // IPIP: 4 or 41 by the inner packet
			proto = header.InnerIPProto(p)
		}
		b := make([]byte, header.IPv4HeaderLen+len(p))
		header.EncodeIPv4(b, len(b), 64, proto, u.local, u.remote)
		copy(b[header.IPv4HeaderLen:], p)
		if tap := u.Tap.Load(); tap != nil {
			(*tap)(append([]byte(nil), b...))
		}
		select {
		case u.peer.Load().in <- b:
			u.Sent.Add(1)
		default:
		}
	}
	return len(pkts), nil
}

func (u *ChannelUplink) Receivers() []conn.ReceiveFunc {
	return []conn.ReceiveFunc{u.receive}
}

func (u *ChannelUplink) receive(bufs [][]byte, sizes []int, _ []netip.AddrPort) (int, error) {
	n := 0
	select {
	case p := <-u.in:
		sizes[0] = copy(bufs[0], p)
		if len(p) > len(bufs[0]) {
			sizes[0] = 0
		}
		n = 1
	case <-u.closed:
		return 0, errors.New("conntest: closed")
	}
	for n < len(bufs) {
		select {
		case p := <-u.in:
			sizes[n] = copy(bufs[n], p)
			n++
		default:
			return n, nil
		}
	}
	return n, nil
}

func (u *ChannelUplink) Close() error {
	u.closeOnce.Do(func() { close(u.closed) })
	return nil
}
