package hosttest

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// TUN is a tuntest.ChannelTUN that is a link of a Recorder while it is
// open, as tun.CreateTUN's device is a link of the host, and that can be
// made to fail as a real one does. Hand Open to a role's Deps.OpenTUN; a
// test writes packets to Ch.Outbound (the host sends them into the TUN)
// and reads what the role wrote from Ch.Inbound.
type TUN struct {
	tun.Device
	Ch *tuntest.ChannelTUN

	rec   *Recorder
	name  string
	batch int

	mu      sync.Mutex
	pending [][]byte
	pendErr error
	readErr atomic.Pointer[error]
	tooMany atomic.Bool
	opened  chan struct{}
	once    sync.Once
}

// NewTUN is a TUN for rec, closed until a role opens it.
func NewTUN(rec *Recorder) *TUN {
	ch := tuntest.NewChannelTUN()
	return &TUN{Device: ch.TUN(), Ch: ch, rec: rec, batch: 1, opened: make(chan struct{})}
}

// Open is a Deps.OpenTUN: the link appears on the Recorder.
func (t *TUN) Open(name string, mtu int) (tun.Device, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.name != "" {
		return nil, fmt.Errorf("hosttest: TUN %s opened twice", name)
	}
	t.name = name
	t.rec.AddLink(name, mtu)
	close(t.opened)
	return t, nil
}

// Opened is closed once a role has opened the TUN.
func (t *TUN) Opened() <-chan struct{} { return t.opened }

// SetBatchSize is how many packets a Read may return (offloads on: more than 1).
func (t *TUN) SetBatchSize(n int) { t.batch = n }

func (t *TUN) BatchSize() int { return t.batch }

// Pending makes the next Read return pkts and err at once, as a GSO read
// that could not split everything returns tun.ErrTooManySegments with the
// packets it did split.
func (t *TUN) Pending(pkts [][]byte, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pending, t.pendErr = pkts, err
}

// TooManySegmentsNext makes the next Read that returns packets also return
// tun.ErrTooManySegments (for a Read that is blocked already).
func (t *TUN) TooManySegmentsNext() { t.tooMany.Store(true) }

// FailReads makes every Read from now on return err, as a deleted TUN's
// does, waking a Read that is blocked.
func (t *TUN) FailReads(err error) {
	t.readErr.Store(&err)
	go func() {
		select {
		case t.Ch.Outbound <- tuntest.Ping(netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")):
		case <-time.After(5 * time.Second): // no Read was blocked
		}
	}()
}

func (t *TUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := t.readErr.Load(); err != nil {
		return 0, *err
	}
	t.mu.Lock()
	p, perr := t.pending, t.pendErr
	t.pending, t.pendErr = nil, nil
	t.mu.Unlock()
	if p != nil {
		for i, pkt := range p {
			sizes[i] = copy(bufs[i][offset:], pkt)
		}
		return len(p), perr
	}
	n, err := t.Device.Read(bufs, sizes, offset)
	if err == nil {
		if rerr := t.readErr.Load(); rerr != nil {
			return 0, *rerr // woken by FailReads
		}
		if n > 0 && t.tooMany.CompareAndSwap(true, false) {
			return n, tun.ErrTooManySegments
		}
	}
	return n, err
}

// Close closes the device and takes its link off the Recorder, as
// closing a TUN deletes it (`ip link del` under a role is the same).
func (t *TUN) Close() error {
	t.once.Do(func() {
		t.mu.Lock()
		name := t.name
		t.mu.Unlock()
		if name != "" {
			t.rec.RemoveLink(name)
		}
		t.Device.Close()
	})
	return nil
}
