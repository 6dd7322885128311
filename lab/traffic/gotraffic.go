package traffic

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/lab/netns"
)

// The built-in traffic tool: Flows TCP (or MPTCP) connections from f.Src to
// f.Dst send as fast as they can for a warm-up second and then f.Duration.
// Every socket is a plain blocking socket that lives on one locked thread
// inside its namespace (Namespace.Do), as iperf3's would in its process:
// that thread's CPU time is the tool's (FlowResult.ToolCPU), so the bench
// can tell the tool's CPU from the bond's in this one process.
//
// It measures what the lab took from iperf3: goodput as the bytes the
// receiver read over the measured interval (after the warm-up, as iperf3
// -O 1), Mbit/s each second, and the sender's retransmissions (TCP_INFO
// total_retrans). It also samples the sender's smoothed RTT (tcpi_rtt) ten
// times a second while loaded, of each subflow for MPTCP, which iperf3's
// JSON does not give per MPTCP subflow.

const (
	// WarmUp is the unmeasured start of every flow (iperf3 -O 1).
	WarmUp = time.Second
	// RTTEvery is how often the sender's TCP_INFO is sampled (and how
	// often the bench pings the tools that report no RTT).
	RTTEvery = 100 * time.Millisecond
	// sendBuf is the size of each write and read.
	sendBuf = 256 << 10
	// BinEvery is the width of FlowResult.Bins.
	BinEvery = 100 * time.Millisecond
)

// From include/uapi/linux/mptcp.h.
const (
	mptcpInfo    = 1 // MPTCP_INFO: fails with EOPNOTSUPP once the connection fell back to TCP
	mptcpTCPInfo = 2 // MPTCP_TCPINFO: struct mptcp_subflow_data, then a tcp_info per subflow
)

// sock is a blocking socket: its owner thread blocks in accept, connect,
// read or write, while the controller may query or shut it down. Only the
// owner closes it, and never while another may still use the number.
type sock struct {
	mu     sync.Mutex
	fd     int
	closed bool
}

func newSock(proto int) (*sock, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		if proto == unix.IPPROTO_MPTCP {
			return nil, fmt.Errorf("MPTCP socket: %w (the kernel has no MPTCP, or net.mptcp.enabled is 0)", err)
		}
		return nil, err
	}
	return &sock{fd: fd}, nil
}

// with runs f on the descriptor unless the socket is closed.
func (s *sock) with(f func(fd int) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	return f(s.fd)
}

// shutdown wakes whoever blocks on the socket: accept fails, read returns 0,
// write fails.
func (s *sock) shutdown() {
	_ = s.with(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
}

func (s *sock) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		unix.Close(s.fd)
	}
}

// threadCPU is the calling thread's user+system CPU time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sockaddr(addr string, port int) (*unix.SockaddrInet4, error) {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		return nil, fmt.Errorf("%q is not an IPv4 address", addr)
	}
	sa := &unix.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	return sa, nil
}

// goFlows is one run of the built-in tool: its sockets and their threads.
type goFlows struct {
	f        Flow
	proto    int
	received atomic.Int64 // bytes the receivers read
	toolCPU  atomic.Int64 // ns of CPU the tool's threads used
	threads  sync.WaitGroup

	mu       sync.Mutex
	stopping bool
	socks    []*sock // every socket, for stop
	senders  []*sock
}

// track registers a socket for stop; one opened after stop is shut down at once.
func (g *goFlows) track(s *sock, sender bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.socks = append(g.socks, s)
	if sender {
		g.senders = append(g.senders, s)
	}
	if g.stopping {
		s.shutdown()
	}
}

// stop wakes every thread of the run and waits for them to end.
func (g *goFlows) stop() {
	g.mu.Lock()
	g.stopping = true
	for _, s := range g.socks {
		s.shutdown()
	}
	g.mu.Unlock()
	g.threads.Wait()
}

func (g *goFlows) stopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopping
}

// goFlow runs the built-in sender and receiver (see the top of this file).
func goFlow(ctx context.Context, f Flow) (res FlowResult, err error) {
	g := &goFlows{f: f}
	if f.MPTCP {
		g.proto = unix.IPPROTO_MPTCP
	}
	ln, port, err := g.listen()
	if err != nil {
		return FlowResult{}, err
	}
	defer ln.close() // after stop: no thread accepts any more
	defer g.stop()
	for i := 0; i < f.Flows; i++ {
		g.threads.Add(1)
		go g.receive(ln)
	}
	type dialed struct {
		s   *sock
		cc  string
		err error
	}
	ready := make(chan dialed, f.Flows)
	for i := 0; i < f.Flows; i++ {
		g.threads.Add(1)
		go g.send(ctx, port, func(s *sock, cc string, err error) { ready <- dialed{s, cc, err} })
	}
	res = FlowResult{Tool: ToolGo, Retransmits: -1}
	var conns []*sock
	for len(conns) < f.Flows {
		select {
		case d := <-ready:
			if d.err != nil {
				return FlowResult{}, d.err
			}
			conns = append(conns, d.s)
			res.CongestionControl = d.cc
		case <-ctx.Done():
			return FlowResult{}, ctx.Err()
		}
	}

	select {
	case <-time.After(WarmUp):
	case <-ctx.Done():
		return FlowResult{}, ctx.Err()
	}
	t0, b0 := time.Now(), g.received.Load()
	if f.Measuring != nil {
		f.Measuring(t0)
	}
	end := time.NewTimer(f.Duration)
	defer end.Stop()
	tick := time.NewTicker(RTTEvery)
	defer tick.Stop()
	secs := int(f.Duration / time.Second)
	lastT, lastB := t0, b0
	// Bin k holds what was read between t0+k·BinEvery and the next: the
	// tick that ends it reads the counter (the ticker keeps its phase).
	nbins := int(f.Duration / BinEvery)
	lastBinB := b0
	bins := func(now time.Time, b int64) {
		if k := len(res.Bins); k < nbins && now.Sub(t0) >= time.Duration(k+1)*BinEvery-BinEvery/2 {
			res.Bins = append(res.Bins, b-lastBinB)
			lastBinB = b
		}
	}
	perSecond := func(now time.Time) {
		b := g.received.Load()
		res.PerSecond = append(res.PerSecond, float64(b-lastB)*8/now.Sub(lastT).Seconds()/1e6)
		lastT, lastB = now, b
	}
	for {
		select {
		case now := <-tick.C:
			bins(now, g.received.Load())
			for _, s := range conns {
				rtts, subflows, _ := senderInfo(s, f.MPTCP)
				res.RTTs = append(res.RTTs, rtts...)
				res.Subflows = max(res.Subflows, subflows)
			}
			// Second k ends at t0+k s; a tick within half a tick of it ends it.
			if k := len(res.PerSecond) + 1; k <= secs && now.Sub(t0) >= time.Duration(k)*time.Second-RTTEvery/2 {
				perSecond(now)
			}
		case <-end.C:
			t1, b1 := time.Now(), g.received.Load()
			bins(t1, b1)
			if len(res.PerSecond) < secs {
				perSecond(t1)
			}
			res.GoodputMbps = float64(b1-b0) * 8 / t1.Sub(t0).Seconds() / 1e6
			for _, s := range conns {
				if _, _, r := senderInfo(s, f.MPTCP); r >= 0 {
					res.Retransmits = max(res.Retransmits, 0) + r
				}
				if f.MPTCP && fellBack(s) {
					return FlowResult{}, errors.New("the MPTCP connection fell back to plain TCP during the run")
				}
			}
			g.stop()
			res.ToolCPU = time.Duration(g.toolCPU.Load())
			return res, nil
		case <-ctx.Done():
			return FlowResult{}, ctx.Err()
		}
	}
}

// listen opens the receivers' listening socket in f.Dst, with the flow's
// congestion control (accepted sockets inherit it, as iperf3 -C sets both
// ends) and its protocol.
func (g *goFlows) listen() (ln *sock, port int, err error) {
	err = g.f.Dst.Do(func() error {
		sa, err := sockaddr(g.f.DstAddr, 0)
		if err != nil {
			return err
		}
		if ln, err = newSock(g.proto); err != nil {
			return err
		}
		err = setCongestion(ln.fd, g.f.CongestionControl)
		if err == nil {
			err = unix.SetsockoptInt(ln.fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
		if err == nil {
			err = unix.Bind(ln.fd, sa)
		}
		if err == nil {
			err = unix.Listen(ln.fd, 16)
		}
		var got unix.Sockaddr
		if err == nil {
			got, err = unix.Getsockname(ln.fd)
		}
		if err != nil {
			ln.close()
			return fmt.Errorf("receiver on %s: %w", g.f.DstAddr, err)
		}
		port = got.(*unix.SockaddrInet4).Port
		return nil
	})
	if err == nil {
		g.track(ln, false)
	}
	return ln, port, err
}

// receive is one receiver thread in f.Dst: it accepts one connection and
// reads it until it ends or the run stops.
func (g *goFlows) receive(ln *sock) {
	defer g.threads.Done()
	_ = g.f.Dst.Do(func() error {
		cpu0 := threadCPU()
		defer func() { g.toolCPU.Add(int64(threadCPU() - cpu0)) }()
		var fd int
		var err error
		for {
			if fd, _, err = unix.Accept4(ln.fd, unix.SOCK_CLOEXEC); err != unix.EINTR {
				break
			}
		}
		if err != nil {
			return err // the run stopped
		}
		c := &sock{fd: fd}
		g.track(c, false)
		defer c.close()
		buf := make([]byte, sendBuf)
		for {
			n, err := unix.Read(fd, buf)
			if n > 0 {
				g.received.Add(int64(n))
			}
			if err == unix.EINTR {
				continue
			}
			if n <= 0 || err != nil {
				return err
			}
		}
	})
}

// send is one sender thread in f.Src: it connects, tells ready, and writes
// until the run stops.
func (g *goFlows) send(ctx context.Context, port int, ready func(*sock, string, error)) {
	defer g.threads.Done()
	f := g.f
	err := f.Src.Do(func() error {
		cpu0 := threadCPU()
		defer func() { g.toolCPU.Add(int64(threadCPU() - cpu0)) }()
		s, err := newSock(g.proto)
		if err != nil {
			return err
		}
		defer s.close()
		g.track(s, true)
		if err := setCongestion(s.fd, f.CongestionControl); err != nil {
			return err
		}
		if f.SrcAddr != "" {
			sa, err := sockaddr(f.SrcAddr, 0)
			if err != nil {
				return err
			}
			if err := unix.Bind(s.fd, sa); err != nil {
				return fmt.Errorf("sender bind %s: %w", f.SrcAddr, err)
			}
		}
		dst, err := sockaddr(f.DstAddr, port)
		if err != nil {
			return err
		}
		if err := connect(ctx, s.fd, dst, 5*time.Second); err != nil {
			return fmt.Errorf("connect %s:%d: %w", f.DstAddr, port, err)
		}
		if f.MPTCP && fellBack(s) {
			return errors.New("the MPTCP connection fell back to plain TCP: does the receiver's namespace have net.mptcp.enabled?")
		}
		cc, err := unix.GetsockoptString(s.fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		if err != nil {
			return fmt.Errorf("reading TCP_CONGESTION: %w", err)
		}
		if f.CongestionControl != "" && cc != f.CongestionControl {
			return fmt.Errorf("congestion control is %s, not %s", cc, f.CongestionControl)
		}
		ready(s, cc, nil)
		buf := make([]byte, sendBuf)
		for !g.stopped() {
			if _, err := unix.SendmsgN(s.fd, buf, nil, nil, unix.MSG_NOSIGNAL); err != nil && err != unix.EINTR {
				break
			}
		}
		// Drop what is still queued (RST) instead of sending it after the run.
		_ = unix.SetsockoptLinger(s.fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		return nil
	})
	if err != nil {
		ready(nil, "", err)
	}
}

// fellBack reports whether an MPTCP socket now runs as plain TCP: then
// MPTCP_INFO fails with EOPNOTSUPP (what Go's TCPConn.MultipathTCP checks).
func fellBack(s *sock) bool {
	err := s.with(func(fd int) error {
		_, err := unix.GetsockoptInt(fd, unix.SOL_MPTCP, mptcpInfo)
		return err
	})
	return err == unix.EOPNOTSUPP || err == unix.ENOPROTOOPT
}

// setCongestion sets a socket's TCP congestion control (TCP_CONGESTION),
// unless name is empty: then the socket keeps its namespace's default. As
// root, a socket may use any available algorithm, also one that
// net.ipv4.tcp_allowed_congestion_control (and so a namespace's default)
// does not list.
func setCongestion(fd int, name string) error {
	if name == "" {
		return nil
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION, name); err != nil {
		return fmt.Errorf("congestion control %q: %w (see net.ipv4.tcp_available_congestion_control)", name, err)
	}
	return nil
}

// connect connects a blocking socket within timeout, awake to ctx.
func connect(ctx context.Context, fd int, sa unix.Sockaddr, timeout time.Duration) error {
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	err := unix.Connect(fd, sa)
	if err != nil && err != unix.EINPROGRESS && err != unix.EINTR {
		return err
	}
	deadline := time.Now().Add(timeout)
	for err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer within %v", timeout)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, perr := unix.Poll(pfd, 100)
		if perr != nil && perr != unix.EINTR {
			return perr
		}
		if n == 0 || perr != nil {
			continue
		}
		soerr, gerr := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if gerr != nil {
			return gerr
		}
		if soerr != 0 {
			return unix.Errno(soerr)
		}
		err = nil
	}
	return unix.SetNonblock(fd, false)
}

// senderInfo reads a sender's TCP_INFO: the smoothed RTT of each subflow
// (one for TCP; those of an MPTCP connection from MPTCP_TCPINFO), how many
// subflows it has, and their total retransmissions (-1 if unreadable).
func senderInfo(s *sock, mptcp bool) (rtts []time.Duration, subflows int, retrans int64) {
	retrans = -1
	var infos []unix.TCPInfo
	err := s.with(func(fd int) (err error) {
		if !mptcp {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err == nil {
				infos = []unix.TCPInfo{*info}
			}
			return err
		}
		infos, err = mptcpSubflowInfo(fd)
		return err
	})
	if err != nil {
		return nil, 0, -1
	}
	for _, in := range infos {
		if in.Rtt > 0 {
			rtts = append(rtts, time.Duration(in.Rtt)*time.Microsecond)
		}
		retrans = max(retrans, 0) + int64(in.Total_retrans)
	}
	return rtts, len(infos), retrans
}

// mptcpSubflowData is struct mptcp_subflow_data.
type mptcpSubflowData struct {
	SizeSubflowData, NumSubflows, SizeKernel, SizeUser uint32
}

// mptcpSubflowInfo reads the tcp_info of each subflow of an MPTCP socket
// (getsockopt SOL_MPTCP MPTCP_TCPINFO), up to 8 subflows.
func mptcpSubflowInfo(fd int) ([]unix.TCPInfo, error) {
	const maxSubflows = 8
	hdr := int(unsafe.Sizeof(mptcpSubflowData{}))
	elem := int(unsafe.Sizeof(unix.TCPInfo{}))
	buf := make([]byte, hdr+maxSubflows*elem)
	*(*mptcpSubflowData)(unsafe.Pointer(&buf[0])) = mptcpSubflowData{SizeSubflowData: uint32(hdr), SizeUser: uint32(elem)}
	l := uint32(len(buf))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_MPTCP, mptcpTCPInfo,
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return nil, e
	}
	d := *(*mptcpSubflowData)(unsafe.Pointer(&buf[0]))
	if d.SizeUser == 0 || int(d.SizeUser) > elem {
		return nil, errors.New("MPTCP_TCPINFO: unexpected tcp_info size")
	}
	n := min(int(d.NumSubflows), maxSubflows)
	infos := make([]unix.TCPInfo, n)
	for i := range infos {
		off := hdr + i*int(d.SizeUser)
		if off+int(d.SizeUser) > int(l) {
			return infos[:i], nil
		}
		copy(unsafe.Slice((*byte)(unsafe.Pointer(&infos[i])), elem), buf[off:off+int(d.SizeUser)])
	}
	return infos, nil
}

// ProbeCongestion returns the congestion control a TCP socket in ns gets
// when asked for name ("": the namespace's default), loading its module if
// need be; an unknown name is an error.
func ProbeCongestion(ns *netns.Namespace, name string) (cc string, err error) {
	err = ns.Do(func() error {
		s, err := newSock(0)
		if err != nil {
			return err
		}
		defer s.close()
		if err := setCongestion(s.fd, name); err != nil {
			return err
		}
		cc, err = unix.GetsockoptString(s.fd, unix.IPPROTO_TCP, unix.TCP_CONGESTION)
		return err
	})
	return cc, err
}
