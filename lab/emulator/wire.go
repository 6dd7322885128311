package emulator

import (
	"container/heap"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Stats count one direction of a wire.
type Stats struct {
	Frames, Bytes       atomic.Uint64 // passed on
	DropLoss, DropQueue atomic.Uint64
	WriteErrors         atomic.Uint64
}

// Wire carries frames between two interfaces (a and b) of one namespace,
// shaping each direction: an emulated link.
type Wire struct {
	AB, BA *Direction
	socks  []*os.File
	wg     sync.WaitGroup
	done   chan struct{}
}

// Direction is one way of a wire.
type Direction struct {
	in, out *os.File
	mu      sync.Mutex
	cond    *sync.Cond
	shaper  *Shaper
	q       frameHeap
	seq     uint64
	reorder bool
	closed  bool
	Stats   Stats
}

// StartWire opens packet sockets on interfaces a and b, in the namespace
// that do runs functions in, and carries frames a→b with ab and b→a with ba.
// The interfaces' offloads must be off (see DisableOffloads), so every frame
// is one whole packet with its checksum.
func StartWire(do func(func() error) error, a, b string, ab, ba Params, seed uint64) (*Wire, error) {
	w := &Wire{done: make(chan struct{})}
	var fa, fb *os.File
	if err := do(func() (err error) {
		if fa, err = openPacket(a); err != nil {
			return err
		}
		fb, err = openPacket(b)
		return err
	}); err != nil {
		if fa != nil {
			fa.Close()
		}
		return nil, err
	}
	w.socks = []*os.File{fa, fb}
	start := time.Now() // time 0 of both directions' schedules and traces
	w.AB = newDirection(fa, fb, ab, seed, start)
	w.BA = newDirection(fb, fa, ba, seed+1, start)
	for _, d := range []*Direction{w.AB, w.BA} {
		w.wg.Add(2)
		go func() { defer w.wg.Done(); d.readLoop() }()
		go func() { defer w.wg.Done(); d.writeLoop() }()
	}
	return w, nil
}

// SetParams changes a direction's link at run time; p's schedule and trace
// start now.
func (d *Direction) SetParams(p Params) {
	d.mu.Lock()
	d.shaper = NewShaperAt(p, d.shaper.rng, time.Now())
	d.reorder = p.Reorder
	d.mu.Unlock()
}

// Close stops the wire.
func (w *Wire) Close() error {
	var errs []error
	for _, d := range []*Direction{w.AB, w.BA} {
		d.mu.Lock()
		d.closed = true
		d.cond.Broadcast()
		d.mu.Unlock()
	}
	for _, f := range w.socks {
		errs = append(errs, f.Close())
	}
	w.wg.Wait()
	return errors.Join(errs...)
}

func newDirection(in, out *os.File, p Params, seed uint64, start time.Time) *Direction {
	d := &Direction{in: in, out: out, shaper: NewShaperAt(p, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), start), reorder: p.Reorder}
	d.cond = sync.NewCond(&d.mu)
	return d
}

type frame struct {
	at  time.Time
	seq uint64
	buf []byte
}

type frameHeap []frame

func (h frameHeap) Len() int { return len(h) }
func (h frameHeap) Less(i, j int) bool {
	if h[i].at.Equal(h[j].at) {
		return h[i].seq < h[j].seq
	}
	return h[i].at.Before(h[j].at)
}
func (h frameHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *frameHeap) Push(x any)   { *h = append(*h, x.(frame)) }
func (h *frameHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	*h = old[:len(old)-1]
	return f
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 16384); return &b }}

func (d *Direction) readLoop() {
	for {
		bp := bufPool.Get().(*[]byte)
		n, err := d.in.Read(*bp)
		if err != nil {
			return
		}
		now := time.Now()
		d.mu.Lock()
		at, v := d.shaper.Admit(now, n)
		switch v {
		case DropLoss:
			d.Stats.DropLoss.Add(1)
		case DropQueue:
			d.Stats.DropQueue.Add(1)
		default:
			d.seq++
			heap.Push(&d.q, frame{at: at, seq: d.seq, buf: (*bp)[:n]})
			d.cond.Signal()
			bp = nil
		}
		d.mu.Unlock()
		if bp != nil {
			bufPool.Put(bp)
		}
	}
}

// writeLoop sends each frame at its departure time. It sleeps with
// nanosleep (Go timers round short waits up to a millisecond), at most 1 ms
// at a time when frames may reorder, since an earlier one can arrive.
func (d *Direction) writeLoop() {
	for {
		d.mu.Lock()
		for len(d.q) == 0 && !d.closed {
			d.cond.Wait()
		}
		if d.closed {
			d.mu.Unlock()
			return
		}
		head := d.q[0]
		wait := time.Until(head.at)
		if wait > 0 {
			if d.reorder {
				wait = min(wait, time.Millisecond)
			}
			d.mu.Unlock()
			ts := unix.NsecToTimespec(int64(wait))
			_ = unix.Nanosleep(&ts, nil)
			continue
		}
		heap.Pop(&d.q)
		d.mu.Unlock()
		if _, err := d.out.Write(head.buf); err != nil {
			d.Stats.WriteErrors.Add(1)
		} else {
			d.Stats.Frames.Add(1)
			d.Stats.Bytes.Add(uint64(len(head.buf)))
		}
		b := head.buf[:cap(head.buf)]
		bufPool.Put(&b)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func openPacket(ifname string) (*os.File, error) {
	ifi, err := interfaceIndex(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", ifname, err)
	}
	// Our own transmissions on this interface are not input.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("%s: PACKET_IGNORE_OUTGOING: %w", ifname, err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind packet socket to %s: %w", ifname, err)
	}
	return os.NewFile(uintptr(fd), "packet-"+ifname), nil
}

func interfaceIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("interface %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

// DisableOffloads turns off checksum offload, scatter-gather, TSO, GSO and
// GRO on an interface (ethtool -K IF tx off sg off tso off gso off gro off),
// so frames on it are whole packets that a packet socket can carry.
func DisableOffloads(ifname string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	const (
		ethtoolSTXCSUM = 0x17
		ethtoolSSG     = 0x19
		ethtoolSTSO    = 0x1f
		ethtoolSGSO    = 0x24
		ethtoolSGRO    = 0x2c
	)
	type ethtoolValue struct{ cmd, data uint32 }
	type ifreqData struct {
		name [unix.IFNAMSIZ]byte
		data uintptr // *ethtoolValue, pinned below
		_    [16]byte
	}
	for _, cmd := range []uint32{ethtoolSGRO, ethtoolSGSO, ethtoolSTSO, ethtoolSSG, ethtoolSTXCSUM} {
		val := &ethtoolValue{cmd: cmd}
		var pin runtime.Pinner
		pin.Pin(val)
		ifr := &ifreqData{data: uintptr(unsafe.Pointer(val))}
		copy(ifr.name[:], ifname)
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
		pin.Unpin()
		if e != 0 && e != unix.EOPNOTSUPP {
			return fmt.Errorf("ethtool %s cmd %#x: %w", ifname, cmd, e)
		}
	}
	return nil
}
