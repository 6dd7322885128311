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
	Local, Remote netip.Addr // the two ends of the uplink, both IPv4 or both IPv6; no Remote: a director (SendTo)
	Device        string     // if set, the sockets are bound to it (SO_BINDTODEVICE)
	Protocols     []uint8    // outer IP protocols, one socket each (encap.Encapsulation.Protocols)
	BatchSize     int        // packets per recvmmsg/sendmmsg (default 64)
	SocketBuffer  int        // SO_RCVBUF/SO_SNDBUF in bytes (default 4 MiB)
}

// RawUplink is an Uplink over raw IP sockets (protocol 47 for GRE; 4 and 41
// for IPIP), IPv4 or IPv6 (GRE over IPv6, RFC 7676), bound to the uplink's
// local address and, when named, its device, batched with
// recvmmsg/sendmmsg. Packets from any source reach the receivers; the
// decoder drops those not from Remote.
//
// The two families differ in what a receiver hands over (see OuterHeader):
//
//   - IPv4: bufs[i][:sizes[i]] starts with the outer IPv4 header, which names
//     the sender; from is left alone.
//   - IPv6: the kernel strips the outer IPv6 header (and any extension
//     headers), so bufs[i][:sizes[i]] starts at the GRE (or inner IP)
//     header, and from[i], when from is not nil, is the sender's address
//     (port 0).
//
// Send and SendTo take packets without an outer header in both families.
type RawUplink struct {
	cfg   RawConfig
	v6    bool
	socks []*rawSocket
	mu    sync.Mutex // serialises Send (data, probes and replies share it)
}

// OpenRaw opens the sockets of one uplink. Local and Remote (when valid)
// must be of one family; IPv6 link-local addresses are refused (the
// sockets carry no scope).
func OpenRaw(cfg RawConfig) (*RawUplink, error) {
	if !cfg.Local.IsValid() {
		return nil, errors.New("raw uplink: no local address")
	}
	cfg.Local = cfg.Local.Unmap().WithZone("")
	v6 := cfg.Local.Is6()
	if !cfg.Remote.IsValid() {
		// A director: destinations per packet (SendTo).
		cfg.Remote = netip.IPv4Unspecified()
		if v6 {
			cfg.Remote = netip.IPv6Unspecified()
		}
	}
	cfg.Remote = cfg.Remote.Unmap().WithZone("")
	switch {
	case cfg.Local.Is4() != cfg.Remote.Is4():
		return nil, fmt.Errorf("uplink %v→%v: local address %v is %s and remote %v is %s: both outer addresses must be of one family",
			cfg.Local, cfg.Remote, cfg.Local, family(cfg.Local), cfg.Remote, family(cfg.Remote))
	case v6 && cfg.Local.IsLinkLocalUnicast():
		return nil, fmt.Errorf("uplink %v→%v: local address %v is IPv6 link-local, which raw uplinks do not support: use a global or unique local address", cfg.Local, cfg.Remote, cfg.Local)
	case v6 && cfg.Remote.IsLinkLocalUnicast():
		return nil, fmt.Errorf("uplink %v→%v: remote address %v is IPv6 link-local, which raw uplinks do not support: use a global or unique local address", cfg.Local, cfg.Remote, cfg.Remote)
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = 4 << 20
	}
	u := &RawUplink{cfg: cfg, v6: v6}
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

func family(a netip.Addr) string {
	if a.Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// OuterHeader reports whether received packets start with the outer IP
// header: true for IPv4 sockets, which name the sender there; false for
// IPv6 ones, whose receivers start packets at the GRE header and set
// from[i] to the sender instead.
func (u *RawUplink) OuterHeader() bool { return !u.v6 }

func (u *RawUplink) BatchSize() int { return u.cfg.BatchSize }

// Receivers returns one ReceiveFunc per socket. Packet i is
// bufs[i][:sizes[i]] (size 0: it did not fit its buffer). From an IPv4
// uplink it starts with the outer IPv4 header and from is left alone; from
// an IPv6 one it starts after the outer IPv6 header, and from[i] (when from
// is not nil) is its sender with port 0. See OuterHeader.
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

// SendTo sends each packet to its own destination, for a director. The
// destinations must be of the local address's family (an IPv4-mapped IPv6
// address counts as IPv4): the packets before the first that is not are
// sent, and the error names it.
func (u *RawUplink) SendTo(pkts [][]byte, dsts []netip.Addr) (int, error) {
	if len(dsts) < len(pkts) {
		return 0, fmt.Errorf("uplink %v: SendTo: %d destinations for %d packets", u.cfg.Local, len(dsts), len(pkts))
	}
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
	local netip.Addr
	v6    bool   // AF_INET6: no outer header on receive; senders in rnames
	salen uint32 // the size of the destination sockaddrs

	// receive state, used by one goroutine
	rhdrs  []unix.Mmsghdr
	riov   []unix.Iovec
	rnames []unix.RawSockaddrInet6 // IPv6: the senders
	rn     int
	rerr   error
	readFn func(fd uintptr) bool

	// send state, used under RawUplink.mu
	shdrs   []unix.Mmsghdr
	siov    []unix.Iovec
	dst     unix.RawSockaddrInet6   // the remote (a sockaddr_in in its first bytes for IPv4)
	dsts    []unix.RawSockaddrInet6 // per-message destinations for sendTo, likewise
	sfrom   int                     // the sendmmsg window shdrs[sfrom:sfrom+sn]; sn becomes how many went
	sn      int
	serr    error
	writeFn func(fd uintptr) bool
}

// putSockaddr fills sa with a (of the socket's family) as a sockaddr_in6,
// or a sockaddr_in in its first bytes. The port stays 0: a raw socket takes
// its protocol from the socket.
func putSockaddr(sa *unix.RawSockaddrInet6, a netip.Addr, v6 bool) {
	if v6 {
		*sa = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
		return
	}
	*sa = unix.RawSockaddrInet6{}
	sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
	sa4.Family = unix.AF_INET
	sa4.Addr = a.As4()
}

func openRawSocket(cfg RawConfig, proto uint8) (*rawSocket, error) {
	v6 := cfg.Local.Is6()
	af := unix.AF_INET
	if v6 {
		af = unix.AF_INET6
	}
	fd, err := unix.Socket(af, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("raw %s socket for IP protocol %d: %w (tunbond needs root or CAP_NET_RAW)", family(cfg.Local), proto, err)
		}
		return nil, fmt.Errorf("raw %s socket for IP protocol %d: %w", family(cfg.Local), proto, err)
	}
	fail := func(what string, err error) (*rawSocket, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("uplink %v: %s: %w", cfg.Local, what, err)
	}
	if what, err := setDeviceAndBuffers(fd, cfg.Device, cfg.SocketBuffer); err != nil {
		return fail(what, err)
	}
	var sa unix.Sockaddr
	if v6 {
		sa = &unix.SockaddrInet6{Addr: cfg.Local.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: cfg.Local.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
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
		f: f, rc: rc, proto: proto, local: cfg.Local, v6: v6,
		salen: unix.SizeofSockaddrInet4,
		rhdrs: make([]unix.Mmsghdr, n), riov: make([]unix.Iovec, n),
		shdrs: make([]unix.Mmsghdr, n), siov: make([]unix.Iovec, n),
		dsts: make([]unix.RawSockaddrInet6, n),
	}
	if v6 {
		s.salen = unix.SizeofSockaddrInet6
		s.rnames = make([]unix.RawSockaddrInet6, n)
	}
	putSockaddr(&s.dst, cfg.Remote, v6)
	for i := range s.shdrs {
		s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dst))
		s.shdrs[i].Hdr.Namelen = s.salen
		s.shdrs[i].Hdr.Iov = &s.siov[i]
		s.shdrs[i].Hdr.SetIovlen(1)
		s.rhdrs[i].Hdr.Iov = &s.riov[i]
		s.rhdrs[i].Hdr.SetIovlen(1)
		if v6 {
			s.rhdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.rnames[i]))
		}
	}
	s.readFn = s.doRead
	s.writeFn = s.doWrite
	return s, nil
}

func (s *rawSocket) receive(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	n := min(len(bufs), len(s.rhdrs))
	for i := 0; i < n; i++ {
		s.riov[i].Base = unsafe.SliceData(bufs[i])
		s.riov[i].SetLen(len(bufs[i]))
		s.rhdrs[i].Hdr.Flags = 0
		if s.v6 {
			s.rhdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6 // the kernel lowers it
		}
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
		if s.v6 && from != nil {
			from[i] = netip.AddrPortFrom(netip.AddrFrom16(s.rnames[i].Addr), 0)
		}
	}
	return s.rn, nil
}

func (s *rawSocket) doRead(fd uintptr) bool {
	k, ready, err := mmsg(unix.SYS_RECVMMSG, fd, &s.rhdrs[0], s.rn)
	if ready {
		s.rn, s.rerr = k, err
	}
	return ready
}

func (s *rawSocket) send(pkts [][]byte) (int, error) { return s.sendTo(pkts, nil) }

// sendTo sends pkts[i] to dsts[i] (a director sends to many real servers),
// or every packet to the uplink's remote when dsts is nil. It stops before
// a destination of the other family and returns an error naming it.
func (s *rawSocket) sendTo(pkts [][]byte, dsts []netip.Addr) (int, error) {
	sent := 0
	for sent < len(pkts) {
		n := min(len(pkts)-sent, len(s.shdrs))
		var bad error
		for i := 0; i < n; i++ {
			p := pkts[sent+i]
			s.siov[i].Base = unsafe.SliceData(p)
			s.siov[i].SetLen(len(p))
			s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dst))
			if dsts != nil {
				d := dsts[sent+i].Unmap()
				if d.Is6() != s.v6 {
					bad = fmt.Errorf("uplink %v: destination %v is %s, the local address %s", s.local, dsts[sent+i], family(d), family(s.local))
					n = i
					break
				}
				putSockaddr(&s.dsts[i], d, s.v6)
				s.shdrs[i].Hdr.Name = (*byte)(unsafe.Pointer(&s.dsts[i]))
			}
		}
		for done := 0; done < n; {
			k, err := s.write(done, n-done)
			sent += k
			if err != nil {
				return sent, err
			}
			done += k
		}
		if bad != nil {
			return sent, bad
		}
	}
	return sent, nil
}

// write sends shdrs[from:from+n] with one sendmmsg (waiting for room) and
// returns how many went.
func (s *rawSocket) write(from, n int) (int, error) {
	s.sn, s.serr = n, nil
	s.sfrom = from
	if err := s.rc.Write(s.writeFn); err != nil {
		return 0, err
	}
	if s.serr != nil {
		return 0, s.serr
	}
	if s.sn == 0 {
		return 0, unix.EIO
	}
	return s.sn, nil
}

func (s *rawSocket) doWrite(fd uintptr) bool {
	k, ready, err := mmsg(unix.SYS_SENDMMSG, fd, &s.shdrs[s.sfrom], s.sn)
	if ready {
		s.sn, s.serr = k, err
	}
	return ready
}
