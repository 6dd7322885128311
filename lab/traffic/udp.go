package traffic

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/lab/netns"
)

// One paced UDP flow: a sender in the source namespace sends datagrams of
// a fixed size at a fixed rate by a schedule (datagram k is due at start +
// k·size·8/rate: the rate does not drift, and a sender that falls behind
// catches up in batches), and a receiver in the destination namespace
// counts what arrives. Each datagram starts with its sequence number and
// its send time (UnixNano, big-endian, 8 bytes each); the receiver takes
// the arrival time from the kernel (SO_TIMESTAMPNS), so the one-way delay
// is the path's and not the receiving thread's lateness. Both ends are on
// this host: one clock.

const (
	udpHeader = 16 // sequence number, send time
	udpBatch  = 64 // datagrams per sendmmsg / recvmmsg
	// udpQuantum is the pacing granularity: the sender sleeps until at
	// least this much of the schedule is due (one datagram if that is
	// longer), then sends what is due in one batch.
	udpQuantum = 100 * time.Microsecond
	// udpMaxBacklog bounds a catch-up burst: a sender stalled for longer
	// (descheduled on a busy host) skips the datagrams due before it, so
	// its stall does not become a line-rate burst into the path.
	udpMaxBacklog = 50 * time.Millisecond
	// UDPStragglers is how long the receiver goes on after the sender stops.
	UDPStragglers = time.Second
	udpRcvBuf     = 8 << 20
)

// UDPResult is what one paced UDP flow measured.
type UDPResult struct {
	// Sent is the datagrams the sender's kernel took; Received the
	// distinct ones the receiver got (duplicates not counted).
	Sent, Received uint64
	// OutOfOrder is the datagrams that arrived with a sequence number
	// lower than the highest seen before them (duplicates not counted).
	OutOfOrder uint64
	Duplicates uint64
	// Skipped is the datagrams not sent because the sender was stalled
	// for more than udpMaxBacklog (50 ms); SendErrors those the kernel
	// refused (e.g. ENOBUFS).
	Skipped, SendErrors uint64
	// RcvbufDrops is the datagrams the receiving socket's buffer dropped
	// (SO_RXQ_OVFL): lost in this host's receiver, not on the path.
	RcvbufDrops uint64
	// ReceivedPct is 100·Received/Sent; GoodputMbps the received
	// datagrams' bytes (UDP payload) over the sending time.
	ReceivedPct, GoodputMbps float64
	// DelayP50 and DelayP99 are the one-way delay percentiles of the
	// received datagrams, from send to the kernel's arrival stamp.
	DelayP50, DelayP99 time.Duration
	// SendTime is how long the sender sent.
	SendTime time.Duration
}

// UDPFlow sends one paced UDP flow from src to addr, a receiver in dst,
// at rateBps (bit/s of UDP payload) in datagrams of size bytes (at least
// 16) for d, then waits UDPStragglers for late datagrams. A nil namespace
// is this thread's own (for tests over loopback).
func UDPFlow(ctx context.Context, src, dst *netns.Namespace, addr string, rateBps float64, size int, d time.Duration) (UDPResult, error) {
	return UDPFlowFrom(ctx, src, dst, "", addr, rateBps, size, d)
}

// UDPFlowFrom is UDPFlow with the sender bound to srcAddr ("": the route's).
func UDPFlowFrom(ctx context.Context, src, dst *netns.Namespace, srcAddr, dstAddr string, rateBps float64, size int, d time.Duration) (UDPResult, error) {
	if size < udpHeader || size > 65507 {
		return UDPResult{}, fmt.Errorf("UDP datagram size %d: want %d to 65507 bytes", size, udpHeader)
	}
	if rateBps <= 0 || d <= 0 {
		return UDPResult{}, fmt.Errorf("UDP flow of %v bit/s for %v", rateBps, d)
	}
	dip := net.ParseIP(dstAddr).To4()
	if dip == nil {
		return UDPResult{}, fmt.Errorf("%q is not an IPv4 address", dstAddr)
	}
	var sip net.IP
	if srcAddr != "" {
		if sip = net.ParseIP(srcAddr).To4(); sip == nil {
			return UDPResult{}, fmt.Errorf("%q is not an IPv4 address", srcAddr)
		}
	}
	ipg := float64(size*8) / rateBps * 1e9 // ns between datagrams
	total := uint64(float64(d) / ipg)
	if total == 0 {
		total = 1
	}

	var rc, sc *net.UDPConn
	if err := inNS(dst, func() (err error) {
		if rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: dip}); err != nil {
			return fmt.Errorf("UDP receiver on %s: %w", dstAddr, err)
		}
		if err = rcvOptions(rc); err != nil {
			rc.Close()
		}
		return err
	}); err != nil {
		return UDPResult{}, err
	}
	defer rc.Close()
	if err := inNS(src, func() (err error) {
		if sc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: sip}); err != nil {
			return fmt.Errorf("UDP sender on %s: %w", srcAddr, err)
		}
		_ = sc.SetWriteBuffer(4 << 20)
		return nil
	}); err != nil {
		return UDPResult{}, err
	}
	defer sc.Close()
	to := &net.UDPAddr{IP: dip, Port: rc.LocalAddr().(*net.UDPAddr).Port}

	r := newUDPReceiver(total)
	done := make(chan error, 1)
	go func() { done <- inNS(dst, func() error { return r.run(rc, size) }) }()

	var s udpSender
	if err := inNS(src, func() error { return s.run(ctx, sc, to, ipg, total, size) }); err != nil {
		return UDPResult{}, err
	}
	// Stragglers: the receiver reads until then (at once if cancelled).
	_ = rc.SetReadDeadline(time.Now().Add(UDPStragglers))
	var rerr error
	select {
	case rerr = <-done:
	case <-ctx.Done():
		_ = rc.SetReadDeadline(time.Now())
		<-done
		return UDPResult{}, ctx.Err()
	}
	if ctx.Err() != nil {
		return UDPResult{}, ctx.Err()
	}
	if rerr != nil {
		return UDPResult{}, fmt.Errorf("UDP receiver: %w", rerr)
	}
	res := UDPResult{Sent: s.sent, Skipped: s.skipped, SendErrors: s.errors, SendTime: s.elapsed,
		Received: r.received, OutOfOrder: r.outOfOrder, Duplicates: r.duplicates, RcvbufDrops: uint64(r.drops)}
	if res.Sent == 0 {
		return res, errors.New("the UDP sender could not send a datagram")
	}
	res.ReceivedPct = 100 * float64(res.Received) / float64(res.Sent)
	if s.elapsed > 0 {
		res.GoodputMbps = float64(res.Received*uint64(size)) * 8 / s.elapsed.Seconds() / 1e6
	}
	res.DelayP50, res.DelayP99 = r.delayPercentiles()
	return res, nil
}

// inNS runs f on a locked thread in ns, or in this thread's namespace if ns is nil.
func inNS(ns *netns.Namespace, f func() error) error {
	if ns != nil {
		return ns.Do(f)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return f()
}

// rcvOptions gives the receiving socket a big buffer (SO_RCVBUFFORCE as
// root, else what net.core.rmem_max allows), the kernel's arrival stamps
// and its count of drops.
func rcvOptions(c *net.UDPConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, udpRcvBuf) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, udpRcvBuf)
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); serr != nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1)
	}); err != nil {
		return err
	}
	return serr
}

// udpSender paces datagrams by the schedule (see the top of the file).
type udpSender struct {
	sent, skipped, errors uint64
	elapsed               time.Duration
}

func (s *udpSender) run(ctx context.Context, c *net.UDPConn, to *net.UDPAddr, ipg float64, total uint64, size int) error {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, size)}
		msgs[i].Addr = to
	}
	quantum := max(uint64(float64(udpQuantum)/ipg), 1)
	maxBacklog := max(uint64(float64(udpMaxBacklog)/ipg), udpBatch)
	start := time.Now()
	due := func(at time.Duration) uint64 { return min(uint64(float64(at)/ipg)+1, total) } // datagrams 0..due-1
	var k uint64                                                                          // the next sequence number
	for k < total && ctx.Err() == nil {
		el := time.Since(start)
		n := due(el)
		if n <= k {
			// Wake when the next quantum's last datagram is due.
			wake := time.Duration(float64(min(k+quantum-1, total-1)) * ipg)
			pause(wake - el)
			continue
		}
		if n-k > maxBacklog {
			s.skipped += n - k - maxBacklog
			k = n - maxBacklog
		}
		b := int(min(n-k, udpBatch))
		ts := uint64(time.Now().UnixNano())
		for i := 0; i < b; i++ {
			buf := msgs[i].Buffers[0]
			binary.BigEndian.PutUint64(buf[0:8], k+uint64(i))
			binary.BigEndian.PutUint64(buf[8:16], ts)
		}
		w, err := pc.WriteBatch(msgs[:b], 0)
		w = max(w, 0)
		s.sent += uint64(w)
		k += uint64(w)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// The datagram the kernel refused (ENOBUFS, ICMP errors) is not
			// sent again: its sequence number stays a hole.
			s.errors++
			k++
		}
	}
	s.elapsed = time.Since(start)
	return nil
}

// pause sleeps d: time.Sleep (whose wake-ups the Go runtime rounds to a
// millisecond) for the bulk of a long wait, nanosleep on this locked
// thread for a short one.
func pause(d time.Duration) {
	switch {
	case d <= 0:
	case d > 2*time.Millisecond:
		time.Sleep(d - time.Millisecond)
	default:
		ts := unix.NsecToTimespec(int64(d))
		_ = unix.Nanosleep(&ts, nil)
	}
}

// udpReceiver counts one flow's datagrams.
type udpReceiver struct {
	total                            uint64   // sequence numbers are below it
	seen                             []uint64 // bitmap of the sequence numbers received
	highest                          int64    // -1: none yet
	received, outOfOrder, duplicates uint64
	delays                           []uint32 // µs, of each received datagram
	drops                            uint32   // SO_RXQ_OVFL, the socket's running count
}

func newUDPReceiver(total uint64) *udpReceiver {
	return &udpReceiver{total: total, seen: make([]uint64, (total+63)/64), highest: -1,
		delays: make([]uint32, 0, min(total, 1<<22))}
}

// account counts one datagram.
func (r *udpReceiver) account(seq uint64, delay time.Duration) {
	if seq >= r.total {
		return // not this flow's
	}
	w, bit := seq/64, uint64(1)<<(seq%64)
	if r.seen[w]&bit != 0 {
		r.duplicates++
		return
	}
	r.seen[w] |= bit
	r.received++
	if int64(seq) < r.highest {
		r.outOfOrder++
	} else {
		r.highest = int64(seq)
	}
	r.delays = append(r.delays, uint32(min(max(delay, 0)/time.Microsecond, 1<<32-1)))
}

func (r *udpReceiver) delayPercentiles() (p50, p99 time.Duration) {
	if len(r.delays) == 0 {
		return 0, 0
	}
	slices.Sort(r.delays)
	at := func(q int) time.Duration {
		return time.Duration(r.delays[min(len(r.delays)-1, len(r.delays)*q/100)]) * time.Microsecond
	}
	return at(50), at(99)
}

// run reads datagrams until the socket's read deadline.
func (r *udpReceiver) run(c *net.UDPConn, size int) error {
	pc := ipv4.NewPacketConn(c)
	msgs := make([]ipv4.Message, udpBatch)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, size+64)}
		msgs[i].OOB = make([]byte, 128)
	}
	for {
		n, err := pc.ReadBatch(msgs, 0)
		now := time.Now()
		for i := 0; i < n; i++ {
			m := &msgs[i]
			if m.N < udpHeader {
				continue
			}
			buf := m.Buffers[0]
			seq := binary.BigEndian.Uint64(buf[0:8])
			sentAt := int64(binary.BigEndian.Uint64(buf[8:16]))
			at := r.oob(m.OOB[:m.NN], now)
			r.account(seq, time.Duration(at-sentAt))
		}
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil // the deadline: the run is over
			}
			return err
		}
	}
}

// oob reads a datagram's control messages: its arrival stamp (UnixNano;
// now if there is none, or it is not of this clock's recent past) and the
// socket's drop count.
func (r *udpReceiver) oob(b []byte, now time.Time) int64 {
	at := now.UnixNano()
	cms, err := unix.ParseSocketControlMessage(b)
	if err != nil {
		return at
	}
	for _, cm := range cms {
		if cm.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch {
		case cm.Header.Type == unix.SO_TIMESTAMPNS && len(cm.Data) >= 16:
			ts := int64(binary.NativeEndian.Uint64(cm.Data[0:8]))*1e9 + int64(binary.NativeEndian.Uint64(cm.Data[8:16]))
			if ts <= at && at-ts < int64(10*time.Second) {
				at = ts
			}
		case cm.Header.Type == unix.SO_RXQ_OVFL && len(cm.Data) >= 4:
			r.drops = binary.NativeEndian.Uint32(cm.Data[0:4])
		}
	}
	return at
}
