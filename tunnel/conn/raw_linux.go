package conn

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/tunnel/header"
)

// RawConfig describes one uplink carried by raw IP sockets.
type RawConfig struct {
	Local, Remote netip.Addr // IPv4 addresses of the two ends of the uplink
	Device        string     // if set, the sockets are bound to it (SO_BINDTODEVICE)
	Protocols     []uint8    // outer IP protocols, one socket each (encap.Encapsulation.Protocols)
	BatchSize     int        // packets per recvmmsg/sendmmsg (default 64)
	SocketBuffer  int        // SO_RCVBUF/SO_SNDBUF in bytes (default 4 MiB)
}

// RawUplink is an Uplink over raw IPv4 sockets (protocol 47 for GRE; 4 and
// 41 for IPIP), bound to the uplink's local address and, when named, its
// device, batched with recvmmsg/sendmmsg. Packets from any source reach the
// receivers; the decoder drops those not from Remote.
type RawUplink struct {
	cfg   RawConfig
	socks []*rawSocket
	mu    sync.Mutex // serialises Send (data, probes and replies share it)
}

// OpenRaw opens the sockets of one uplink.
func OpenRaw(cfg RawConfig) (*RawUplink, error) {
	if !cfg.Remote.IsValid() {
		cfg.Remote = netip.IPv4Unspecified() // a director: destinations per packet (SendTo)
	}
	if !cfg.Local.Is4() || !cfg.Remote.Is4() {
		return nil, fmt.Errorf("uplink %v→%v: only IPv4 outer addresses are supported", cfg.Local, cfg.Remote)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = 4 << 20
	}
	u := &RawUplink{cfg: cfg}
	for _, p := range cfg.Protocols {
		s, err := openRawSocket(cfg, p)
		if err != nil {
			u.Close()
			return nil, err
		}
		u.socks = append(u.socks, s)
	}
	return u, nil
}

func (u *RawUplink) BatchSize() int { return u.cfg.BatchSize }

func (u *RawUplink) Receivers() []ReceiveFunc {
	fns := make([]ReceiveFunc, len(u.socks))
	for i, s := range u.socks {
		fns[i] = s.receive
	}
	return fns
}

// Send sends pkts; with IPIP, runs of IPv4 and IPv6 inner packets go out on
// the protocol 4 and protocol 41 sockets.
func (u *RawUplink) Send(pkts [][]byte) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byProtocol(pkts, func(s *rawSocket, start, end int) (int, error) { return s.send(pkts[start:end]) })
}

// byProtocol hands each run of packets of one outer protocol to its socket.
func (u *RawUplink) byProtocol(pkts [][]byte, send func(s *rawSocket, start, end int) (int, error)) (int, error) {
	if len(u.socks) == 1 {
		return send(u.socks[0], 0, len(pkts))
	}
	sent := 0
	for start := 0; start < len(pkts); {
		proto := header.InnerIPProto(pkts[start])
		end := start + 1
		for end < len(pkts) && header.InnerIPProto(pkts[end]) == proto {
			end++
		}
		s := u.socks[0]
		if proto == header.ProtoIPv6 {
			s = u.socks[1]
		}
		n, err := send(s, start, end)
		sent += n
		if err != nil {
			return sent, err
		}
		start = end
	}
	return sent, nil
}

// SendTo sends each packet to its own destination, for a director.
func (u *RawUplink) SendTo(pkts [][]byte, dsts []netip.Addr) (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byProtocol(pkts, func(s *rawSocket, start, end int) (int, error) {
		return s.sendTo(pkts[start:end], dsts[start:end])
	})
}

func (u *RawUplink) Close() error {
	var errs []error
	for _, s := range u.socks {
		errs = append(errs, s.f.Close())
	}
	return errors.Join(errs...)
}

// rawSocket is one raw socket with preallocated mmsghdr arrays, driven
// through the Go poller so Close wakes a blocked receiver.
type rawSocket struct {
	f     *os.File
	rc    syscall.RawConn
	proto uint8

	// receive state, used by one goroutine
	rhdrs  []unix.Mmsghdr
	riov   []unix.Iovec
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// send state, used under RawUplink.mu
	shdrs   []unix.Mmsghdr
	siov    []unix.Iovec
	dst     unix.RawSockaddrInet4
	dsts    []unix.RawSockaddrInet4 // per-message destinations for sendTo
	sn      int
	serr    error
	writeFn func(fd uintptr) bool
}

func openRawSocket(cfg RawConfig, proto uint8) (*rawSocket, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("raw socket for IP protocol %d: %w (tunbond needs root or CAP_NET_RAW)", proto, err)
		}
		return nil, fmt.Errorf("raw socket for IP protocol %d: %w", proto, err)
	}
	fail := func(what string, err error) (*rawSocket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("uplink %v: %s: %w", cfg.Local, what, err)
	}
	if cfg.Device != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Device); err != nil {
			return fail("bind to device "+cfg.Device, err)
		}
	}
	// Large buffers absorb bursts from TSO-sized TUN reads; FORCE works as
	// root and ignores rmem_max; fall back to the capped call.
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], cfg.SocketBuffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], cfg.SocketBuffer)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: cfg.Local.As4()}); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return fail("bind", fmt.Errorf("address %v is not on this host", cfg.Local))
		}
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("raw-%d-%v", proto, cfg.Local))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	n := cfg.BatchSize
	s := &rawSocket{
		f: f, rc: rc, proto: proto,
		rhdrs: make([]unix.Mmsghdr, n), riov: make([]unix.Iovec, n),
		shdrs: make([]unix.Mmsghdr, n), siov: make([]unix.Iovec, n),
		dst:  unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: cfg.Remote.As4()},
		dsts: make([]unix.RawSockaddrInet4, n),
	}
	for i := range s.shdrs {
		s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dst))
		s.shdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		s.shdrs[i].Hdr.Iov = &s.siov[i]
		s.shdrs[i].Hdr.Iovlen = 1
		s.rhdrs[i].Hdr.Iov = &s.riov[i]
		s.rhdrs[i].Hdr.Iovlen = 1
	}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	return s, nil
}

func (s *rawSocket) receive(bufs [][]byte, sizes []int, _ []netip.AddrPort) (int, error) {
	n := min(len(bufs), len(s.rhdrs))
	for i := 0; i < n; i++ {
		s.riov[i].Base = &bufs[i][0]
		s.riov[i].SetLen(len(bufs[i]))
		s.rhdrs[i].Hdr.Flags = 0
	}
	s.rn = n
	if err := s.rc.Read(s.readFn); err != nil {
		return 0, err
	}
	if s.rerr != nil {
		return 0, s.rerr
	}
	for i := 0; i < s.rn; i++ {
		sizes[i] = int(s.rhdrs[i].Len)
		if s.rhdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = 0
		}
	}
	return s.rn, nil
}

func (s *rawSocket) doRead(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&s.rhdrs[0])), uintptr(s.rn), 0, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false
	}
	s.rerr = nil
	if e != 0 {
		s.rerr = e
		s.rn = 0
		return true
	}
	s.rn = int(r)
	return true
}

func (s *rawSocket) send(pkts [][]byte) (int, error) { return s.sendTo(pkts, nil) }

// sendTo sends pkts[i] to dsts[i] (a director sends to many real servers),
// or every packet to the uplink's remote when dsts is nil.
func (s *rawSocket) sendTo(pkts [][]byte, dsts []netip.Addr) (int, error) {
	sent := 0
	for sent < len(pkts) {
		n := min(len(pkts)-sent, len(s.shdrs))
		for i := 0; i < n; i++ {
			p := pkts[sent+i]
			s.siov[i].Base = &p[0]
			s.siov[i].SetLen(len(p))
			s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dst))
			if dsts != nil {
				s.dsts[i] = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dsts[sent+i].As4()}
				s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dsts[i]))
			}
		}
		s.sn, s.serr = n, nil
		if err := s.rc.Write(s.writeFn); err != nil {
			return sent, err
		}
		if s.serr != nil {
			return sent, s.serr
		}
		if s.sn == 0 {
			return sent, unix.EIO
		}
		sent += s.sn
	}
	return sent, nil
}

func (s *rawSocket) doWrite(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.shdrs[0])), uintptr(s.sn), 0, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	if e != 0 {
		s.serr = e
		s.sn = 0
		return true
	}
	s.sn = int(r)
	return true
}
