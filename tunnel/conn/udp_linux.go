package conn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DefaultUDPPort is the port of GRE-in-UDP (RFC 8086).
const DefaultUDPPort = 4754

// ErrNoRemote is Send's error while the uplink has no remote (none was
// configured and SetRemote has not named one yet).
var ErrNoRemote = errors.New("udp uplink: no remote address known yet")

// UDPConfig describes one uplink carried in UDP (GRE-in-UDP, RFC 8086).
type UDPConfig struct {
	Local        netip.AddrPort // bound address and port (IPv4 or IPv6); port 0 = ephemeral
	Remote       netip.AddrPort // where Send sends; may be invalid (learned later with SetRemote)
	Device       string         // SO_BINDTODEVICE when set
	BatchSize    int            // packets per batch (default 64)
	SocketBuffer int            // SO_RCVBUF/SO_SNDBUF in bytes (default 4 MiB)
	Log          *slog.Logger   // for the feature-probe log lines; nil = slog.Default()

	noGSO, noGRO bool // tests: run as without UDP GSO, GRO
}

// UDPUplink is an Uplink over one UDP socket: each packet is one datagram's
// payload, the GRE header onwards. It is bound to the local address and,
// when named, the device, and batched with recvmmsg/sendmmsg. Datagrams from
// any source reach the receiver, which reports each one's sender.
//
// Where the kernel has UDP GSO, Send hands each run of equal-size packets
// (the last may be shorter) to the kernel as one super-packet; where it has
// UDP GRO, the receiver reads such runs as one datagram each into buffers of
// its own and cuts them into the caller's.
type UDPUplink struct {
	f     *os.File
	rc    syscall.RawConn
	local netip.AddrPort
	v6    bool // an AF_INET6 socket
	dual  bool // an AF_INET6 socket on :: that also carries IPv4 (v4-mapped)
	batch int
	log   *slog.Logger

	remote atomic.Pointer[udpRemote] // nil: none known
	gso    atomic.Bool               // send runs as super-packets (UDP_SEGMENT)
	gro    bool                      // receive coalesced datagrams (UDP_GRO)

	mu sync.Mutex // serialises Send
	tx udpTx      // used under mu
	rx udpRx      // used by the one receiving goroutine
}

// udpRemote is a destination as the socket takes it, built once by
// SetRemote and read by Send without locking.
type udpRemote struct {
	ap    netip.AddrPort
	sa    unix.RawSockaddrInet6 // or a RawSockaddrInet4 in its first bytes
	salen uint32
	max   int   // the largest UDP payload of a super-packet
	err   error // why this socket cannot send there

	// Under UDPUplink.mu: the largest segment that goes in a super-packet
	// (lowered when the kernel finds a segment too big for the path MTU).
	segMax    int
	segLogged bool
}

// udpTx is the send state: one mmsghdr per datagram or super-packet, whose
// iovecs (one per packet, iov[i] for pkts[i]: no copy) are consecutive in
// iov.
type udpTx struct {
	hdrs    []unix.Mmsghdr
	iov     []unix.Iovec
	ctrl    []byte // a UDP_SEGMENT cmsg per mmsghdr
	pkts    []int  // packets in each mmsghdr
	from, n int    // the sendmmsg window hdrs[from:from+n]; n becomes how many went
	err     error
	writeFn func(fd uintptr) bool
	supers  int // super-packets sent (for tests)
	refused int // super-packets the kernel refused (for tests)
}

// udpRx is the receive state. Without GRO, recvmmsg reads into the
// caller's buffers; with it, into arena (a udpMaxDatagram slot per mmsghdr,
// with a UDP_GRO cmsg), and the datagrams read are cut into the caller's
// buffers over as many calls as it takes.
type udpRx struct {
	hdrs   []unix.Mmsghdr
	iov    []unix.Iovec
	names  []unix.RawSockaddrInet6 // big enough for a sockaddr_in too
	n      int
	err    error
	readFn func(fd uintptr) bool

	// GRO
	arena     []byte
	ctrl      []byte
	dgrams    int            // datagrams read by the last recvmmsg
	cur       int            // the datagram being cut
	off       int            // where its next packet starts
	seg       int            // its segment size (its length if not coalesced)
	src       netip.AddrPort // its sender
	trunc     bool           // it did not fit its slot
	coalesced int            // datagrams that held more than one packet (for tests)
}

// OpenUDP opens the socket of one uplink.
func OpenUDP(cfg UDPConfig) (*UDPUplink, error) {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = 4 << 20
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	la := cfg.Local.Addr()
	if !la.IsValid() {
		return nil, errors.New("udp uplink: no local address (0.0.0.0 or :: binds to any)")
	}
	if la.Is4In6() {
		la = la.Unmap()
	}
	u := &UDPUplink{v6: la.Is6(), batch: cfg.BatchSize, log: cfg.Log}
	u.dual = u.v6 && la.IsUnspecified()
	family := unix.AF_INET
	if u.v6 {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, fmt.Errorf("udp socket: %w", err)
	}
	fail := func(what string, err error) (*UDPUplink, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("uplink %v: %s: %w", cfg.Local, what, err)
	}
	if u.v6 {
		// A specific IPv6 address carries IPv6 only; :: carries both.
		v6only := 1
		if u.dual {
			v6only = 0
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return fail("IPV6_V6ONLY", err)
		}
	}
	if what, err := setDeviceAndBuffers(fd, cfg.Device, cfg.SocketBuffer); err != nil {
		return fail(what, err)
	}
	var sa unix.Sockaddr
	if u.v6 {
		scope, err := scopeID(la.Zone())
		if err != nil {
			return fail("bind", err)
		}
		sa = &unix.SockaddrInet6{Port: int(cfg.Local.Port()), Addr: la.As16(), ZoneId: scope}
	} else {
		sa = &unix.SockaddrInet4{Port: int(cfg.Local.Port()), Addr: la.As4()}
	}
	if err := unix.Bind(fd, sa); err != nil {
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return fail("bind", fmt.Errorf("address %v is not on this host", la))
		}
		return fail("bind", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	port := cfg.Local.Port()
	switch b := bound.(type) {
	case *unix.SockaddrInet4:
		port = uint16(b.Port)
	case *unix.SockaddrInet6:
		port = uint16(b.Port)
	}
	u.local = netip.AddrPortFrom(la, port)

	gsoOff, groOff := "turned off (test)", "turned off (test)"
	if !cfg.noGSO {
		gsoOff = probeGSO(fd)
	}
	if !cfg.noGRO {
		groOff = enableGRO(fd)
	}
	u.gso.Store(gsoOff == "")
	u.gro = groOff == ""
	msg := "UDP GSO on"
	if gsoOff != "" {
		msg = "UDP GSO off: " + gsoOff
	}
	if groOff != "" {
		msg += "; UDP GRO off: " + groOff
	} else {
		msg += "; UDP GRO on"
	}
	u.log.Info(msg, "local", u.local)

	u.f = os.NewFile(uintptr(fd), "udp-"+u.local.String())
	if u.rc, err = u.f.SyscallConn(); err != nil {
		u.f.Close()
		return nil, err
	}
	n := cfg.BatchSize
	u.tx = udpTx{hdrs: make([]unix.Mmsghdr, n), iov: make([]unix.Iovec, n), ctrl: make([]byte, n*segmentCtrlSpace), pkts: make([]int, n)}
	for i := range u.tx.hdrs {
		initSegmentCtrl(u.tx.ctrl[i*segmentCtrlSpace:])
	}
	u.tx.writeFn = u.tx.doWrite
	u.rx = udpRx{hdrs: make([]unix.Mmsghdr, n), iov: make([]unix.Iovec, n), names: make([]unix.RawSockaddrInet6, n)}
	for i := range u.rx.hdrs {
		h := &u.rx.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&u.rx.names[i]))
		h.Iov = &u.rx.iov[i]
		h.SetIovlen(1)
	}
	if u.gro {
		u.rx.arena = make([]byte, n*udpMaxDatagram) // untouched pages stay unbacked
		u.rx.ctrl = make([]byte, n*groCtrlSpace)
		for i := range u.rx.hdrs {
			u.rx.iov[i].Base = &u.rx.arena[i*udpMaxDatagram]
			u.rx.iov[i].SetLen(udpMaxDatagram)
			u.rx.hdrs[i].Hdr.Control = &u.rx.ctrl[i*groCtrlSpace]
		}
	}
	u.rx.readFn = u.rx.doRead
	if cfg.Remote.IsValid() {
		u.SetRemote(cfg.Remote)
	}
	return u, nil
}

// scopeID turns an IPv6 zone (an interface name or index) into a scope id.
func scopeID(zone string) (uint32, error) {
	if zone == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("IPv6 zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}

func (u *UDPUplink) BatchSize() int { return u.batch }

// LocalAddr is the bound address, with the port the kernel chose when the
// configured one was 0.
func (u *UDPUplink) LocalAddr() netip.AddrPort { return u.local }

// Remote is where Send sends (an IPv4-mapped address unmapped), or the zero
// AddrPort when none is known yet.
func (u *UDPUplink) Remote() netip.AddrPort {
	if r := u.remote.Load(); r != nil {
		return r.ap
	}
	return netip.AddrPort{}
}

// SetRemote makes the next Send go to ap; an invalid ap forgets the remote.
// A remote the socket cannot reach (IPv6 from an IPv4 socket, port 0) makes
// Send fail with the reason.
func (u *UDPUplink) SetRemote(ap netip.AddrPort) {
	if !ap.Addr().IsValid() {
		u.remote.Store(nil)
		return
	}
	a := ap.Addr().Unmap()
	ap = netip.AddrPortFrom(a, ap.Port())
	r := &udpRemote{ap: ap, segMax: 1<<16 - 1}
	switch {
	case ap.Port() == 0:
		r.err = fmt.Errorf("uplink %v: remote %v has no port", u.local, ap)
	case !u.v6 && a.Is4():
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa))
		sa.Family = unix.AF_INET
		sa.Addr = a.As4()
		putPort(&sa.Port, ap.Port())
		r.salen = unix.SizeofSockaddrInet4
		r.max = udpMaxPayload4
	case !u.v6:
		r.err = fmt.Errorf("uplink %v: remote %v is IPv6, the local address IPv4", u.local, ap)
	case a.Is4() && !u.dual:
		r.err = fmt.Errorf("uplink %v: remote %v is IPv4, the local address IPv6", u.local, ap)
	default:
		scope, err := scopeID(a.Zone())
		if err != nil {
			r.err = fmt.Errorf("uplink %v: remote %v: %w", u.local, ap, err)
			break
		}
		r.sa.Family = unix.AF_INET6
		r.sa.Addr = a.As16() // v4-mapped for an IPv4 remote
		r.sa.Scope_id = scope
		putPort(&r.sa.Port, ap.Port())
		r.salen = unix.SizeofSockaddrInet6
		r.max = udpMaxPayload6
		if a.Is4() {
			r.max = udpMaxPayload4 // sent as IPv4
		}
	}
	u.remote.Store(r)
}

// putPort stores a port in network byte order.
func putPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// addrPortOf reads a sockaddr_in or sockaddr_in6 filled in by the kernel,
// unmapping a v4-mapped address.
func addrPortOf(sa *unix.RawSockaddrInet6) netip.AddrPort {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		p := (*[2]byte)(unsafe.Pointer(&sa4.Port))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), uint16(p[0])<<8|uint16(p[1]))
	case unix.AF_INET6:
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(p[0])<<8|uint16(p[1]))
	}
	return netip.AddrPort{}
}

// Offloads reports whether UDP GSO (send) and GRO (receive) are in use.
func (u *UDPUplink) Offloads() (gso, gro bool) { return u.gso.Load(), u.gro }

func (u *UDPUplink) Close() error { return u.f.Close() }

func (u *UDPUplink) Receivers() []ReceiveFunc { return []ReceiveFunc{u.receive} }

// Send sends each packet as one datagram's payload to the current remote.
// A super-packet the kernel refuses goes again as datagrams: for EIO (the
// device cannot checksum segments) with GSO off for the socket from then on;
// for EINVAL or EMSGSIZE (a segment too big for the path MTU) with GSO off
// for segments of that size and more to this remote.
func (u *UDPUplink) Send(pkts [][]byte) (int, error) {
	r := u.remote.Load()
	if r == nil {
		return 0, ErrNoRemote
	}
	if r.err != nil {
		return 0, r.err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	t := &u.tx
	sent := 0
	for sent < len(pkts) {
		gso := u.gso.Load()
		chunk := pkts[sent:min(len(pkts), sent+len(t.iov))]
		m := t.prepare(chunk, r, gso)
		done, went := 0, 0 // mmsghdrs and packets of chunk sent
		for done < m {
			t.from, t.n, t.err = done, m-done, nil
			if err := u.rc.Write(t.writeFn); err != nil {
				return sent + went, err
			}
			if t.err != nil {
				if why := gsoRefusal(t.err); gso && t.pkts[done] > 1 && why != "" {
					t.refused++
					if errors.Is(t.err, unix.EIO) {
						u.gso.Store(false)
						u.log.Warn("UDP GSO off: "+why, "local", u.local, "remote", r.ap)
					} else {
						r.segMax = int(t.hdrs[done].Hdr.Iov.Len) - 1
						if !r.segLogged {
							r.segLogged = true
							u.log.Warn(fmt.Sprintf("UDP GSO off for segments over %d bytes: %s", r.segMax, why), "local", u.local, "remote", r.ap)
						}
					}
					break // the rest of chunk again
				}
				return sent + went, t.err
			}
			if t.n == 0 {
				return sent + went, unix.EIO
			}
			for _, k := range t.pkts[done : done+t.n] {
				went += k
				if k > 1 {
					t.supers++
				}
			}
			done += t.n
		}
		sent += went
	}
	return sent, nil
}

// prepare fills the mmsghdrs for pkts (at most len(t.iov)) and returns how
// many. With gso, each run of packets of one size, the last possibly
// shorter, up to the kernel's limits, goes in one mmsghdr with a UDP_SEGMENT
// cmsg, one iovec per packet.
func (t *udpTx) prepare(pkts [][]byte, r *udpRemote, gso bool) int {
	m := 0
	for i := 0; i < len(pkts); {
		size := len(pkts[i])
		j, total := i+1, size
		if gso && size > 0 && size <= r.segMax {
			for j < len(pkts) && j-i < udpMaxSegments {
				n := len(pkts[j])
				if n == 0 || n > size || total+n > r.max {
					break
				}
				total += n
				j++
				if n < size {
					break // a shorter packet ends the run
				}
			}
		}
		for k := i; k < j; k++ {
			t.iov[k].Base = unsafe.SliceData(pkts[k])
			t.iov[k].SetLen(len(pkts[k]))
		}
		h := &t.hdrs[m].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.sa))
		h.Namelen = r.salen
		h.Iov = &t.iov[i]
		h.SetIovlen(j - i)
		if j-i > 1 {
			c := t.ctrl[m*segmentCtrlSpace:][:segmentCtrlSpace]
			putSegmentSize(c, size)
			h.Control = &c[0]
			h.SetControllen(len(c))
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		t.pkts[m] = j - i
		m++
		i = j
	}
	return m
}

func (t *udpTx) doWrite(fd uintptr) bool {
	k, ready, err := mmsg(unix.SYS_SENDMMSG, fd, &t.hdrs[t.from], t.n)
	if ready {
		t.n, t.err = k, err
	}
	return ready
}

// receive reads up to len(bufs) packets; one too big for its buffer has
// size 0.
func (u *UDPUplink) receive(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	if u.gro {
		return u.receiveGRO(bufs, sizes, from)
	}
	r := &u.rx
	n := min(len(bufs), len(r.hdrs))
	for i := 0; i < n; i++ {
		r.iov[i].Base = unsafe.SliceData(bufs[i])
		r.iov[i].SetLen(len(bufs[i]))
		r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		r.hdrs[i].Hdr.Flags = 0
	}
	if err := u.read(n); err != nil {
		return 0, err
	}
	for i := 0; i < r.n; i++ {
		sizes[i] = int(r.hdrs[i].Len)
		if r.hdrs[i].Hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = 0
		}
		if from != nil {
			from[i] = addrPortOf(&r.names[i])
		}
	}
	return r.n, nil
}

// read receives into the first n mmsghdrs of u.rx with recvmmsg, waiting
// until the socket is readable; u.rx.n becomes how many datagrams came.
func (u *UDPUplink) read(n int) error {
	r := &u.rx
	r.n = n
	if err := u.rc.Read(r.readFn); err != nil {
		return err
	}
	return r.err
}

func (r *udpRx) doRead(fd uintptr) bool {
	k, ready, err := mmsg(unix.SYS_RECVMMSG, fd, &r.hdrs[0], r.n)
	if ready {
		r.n, r.err = k, err
	}
	return ready
}

// receiveGRO hands over the packets of the datagrams read, reading more
// (up to one per buffer of the caller) when none are left.
func (u *UDPUplink) receiveGRO(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error) {
	r := &u.rx
	if r.cur >= r.dgrams {
		n := min(len(bufs), len(r.hdrs))
		for i := 0; i < n; i++ {
			h := &r.hdrs[i].Hdr
			h.Namelen = unix.SizeofSockaddrInet6
			h.SetControllen(groCtrlSpace)
			h.Flags = 0
		}
		if err := u.read(n); err != nil {
			return 0, err
		}
		r.dgrams, r.cur, r.off = r.n, 0, 0
		r.startDatagram()
	}
	k := 0
	for k < len(bufs) && r.cur < r.dgrams {
		dlen := int(r.hdrs[r.cur].Len)
		end := min(r.off+r.seg, dlen)
		if n := end - r.off; n > len(bufs[k]) || r.trunc && end == dlen {
			sizes[k] = 0 // too big for the caller's buffer, or for the slot
		} else {
			base := r.cur * udpMaxDatagram
			sizes[k] = copy(bufs[k], r.arena[base+r.off:base+end])
		}
		if from != nil {
			from[k] = r.src
		}
		k++
		r.off = end
		if r.off >= dlen {
			r.cur++
			r.off = 0
			if r.cur < r.dgrams {
				r.startDatagram()
			}
		}
	}
	return k, nil
}

// startDatagram reads the segment size and sender of datagram r.cur.
func (r *udpRx) startDatagram() {
	h := &r.hdrs[r.cur]
	dlen := int(h.Len)
	r.seg = groSegmentSize(r.ctrl[r.cur*groCtrlSpace:][:h.Hdr.Controllen])
	if r.seg <= 0 || r.seg > dlen {
		r.seg = dlen
	} else if r.seg < dlen {
		r.coalesced++
	}
	r.src = addrPortOf(&r.names[r.cur])
	r.trunc = h.Hdr.Flags&unix.MSG_TRUNC != 0
}
