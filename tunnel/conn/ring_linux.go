package conn

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/tunnel/header"
)

// RingConfig sizes a PacketRing.
type RingConfig struct {
	Frames    int // frames in each receive ring, IPv4's and IPv6's (default 8192)
	FrameSize int // bytes per frame, a power of two (default 2048: a 1500-byte packet and the ring's header)
	BatchSize int // packets per Read (default 64)
}

// PacketRing takes the packets addressed to a set of destinations (a
// director's VIPs) as they arrive on any interface, from PACKET_MMAP
// receive rings (TPACKET_V2): the kernel copies each packet into a shared
// frame and the reader walks the frames without a system call while there
// are any, so a busy director makes one poll per batch instead of a read
// per packet. There are two rings, one bound to IPv4 and one to IPv6: a
// socket bound to a protocol gets a packet once, where IP would get it
// (after VLAN untagging, bonding and bridging), where one bound to every
// protocol would see it again on each device it passes. A classic BPF
// filter on each keeps out everything else (and what is not for this host
// at L2). The kernel goes on routing what it copied, so the destinations
// need a blackhole route (the caller's job).
//
// Write sends whole IP packets (ICMP errors from a VIP to a client) with
// header-included raw sockets: the kernel routes them by destination and
// keeps their source.
//
// A packet larger than a frame (GRO on the interface, or jumbo frames) is
// dropped and counted (Truncated); the ring cannot hold it.
type PacketRing struct {
	cfg         RingConfig
	rx          [2]rxRing // IPv4, IPv6
	first       int       // the ring a Read looks at first (they take turns)
	wake        int       // eventfd: Close wakes a Read waiting in poll
	closed      atomic.Bool
	readMu      sync.Mutex
	pollFds     [3]unix.PollFd // Read's, under readMu (not allocated per poll)
	filterMu    sync.Mutex
	send4       int // IPPROTO_RAW, IPv4 (header included)
	send6       int // IPPROTO_RAW, IPv6 (IPV6_HDRINCL)
	sendMu      sync.Mutex
	statsMu     sync.Mutex
	dropped     uint64        // under statsMu
	Truncated   atomic.Uint64 // packets larger than a frame, dropped
	truncatedOn atomic.Int32  // the interface of the last one
	ReadPolled  atomic.Uint64 // polls that Read waited in (a measure of batching)
}

// rxRing is one socket's mapped ring.
type rxRing struct {
	fd     int
	ring   []byte
	next   int // the frame to look at next
	frames int
}

// tpacket2_hdr's fields (linux/if_packet.h).
const (
	tpStatus  = 0
	tpLen     = 4
	tpSnaplen = 8
	tpNet     = 14
	tpIfindex = 32 + 4 // the sockaddr_ll after the header: sll_ifindex
)

// OpenRing opens the ring. It takes nothing until SetDestinations names
// what to take.
func OpenRing(cfg RingConfig) (_ *PacketRing, err error) {
	if cfg.Frames == 0 {
		cfg.Frames = 8192
	}
	if cfg.FrameSize == 0 {
		cfg.FrameSize = 2048
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 64
	}
	if cfg.FrameSize < 256 || cfg.FrameSize&(cfg.FrameSize-1) != 0 || cfg.Frames <= 0 {
		return nil, fmt.Errorf("packet ring: frame size %d is not a power of two of at least 256, or %d frames", cfg.FrameSize, cfg.Frames)
	}
	r := &PacketRing{cfg: cfg, rx: [2]rxRing{{fd: -1}, {fd: -1}}, wake: -1, send4: -1, send6: -1}
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	for i, proto := range []uint16{unix.ETH_P_IP, unix.ETH_P_IPV6} {
		if err := r.rx[i].open(cfg, proto); err != nil {
			return nil, err
		}
	}
	r.cfg.Frames = r.rx[0].frames
	if r.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("packet ring: eventfd: %w", err)
	}
	if r.send4, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		return nil, fmt.Errorf("packet ring: raw IPv4 socket: %w", err)
	}
	if r.send6, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
		return nil, fmt.Errorf("packet ring: raw IPv6 socket: %w", err)
	}
	if err := unix.SetsockoptInt(r.send6, unix.IPPROTO_IPV6, unix.IPV6_HDRINCL, 1); err != nil {
		return nil, fmt.Errorf("packet ring: IPV6_HDRINCL: %w", err)
	}
	return r, nil
}

// open sets up one ring bound to one protocol, taking nothing until the
// filter is set.
func (x *rxRing) open(cfg RingConfig, proto uint16) (err error) {
	// Protocol 0: nothing is delivered before bind, after the filter.
	if x.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		return fmt.Errorf("packet ring: socket: %w", err)
	}
	if err := unix.SetsockoptInt(x.fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fmt.Errorf("packet ring: TPACKET_V2: %w", err)
	}
	if err := x.attach(nil); err != nil {
		return err
	}
	block := max(cfg.FrameSize, 1<<16)
	req := unix.TpacketReq{Block_size: uint32(block), Block_nr: uint32((cfg.Frames*cfg.FrameSize + block - 1) / block),
		Frame_size: uint32(cfg.FrameSize)}
	req.Frame_nr = req.Block_nr * uint32(block/cfg.FrameSize)
	if err := unix.SetsockoptTpacketReq(x.fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fmt.Errorf("packet ring: PACKET_RX_RING (%d frames of %d bytes): %w", req.Frame_nr, cfg.FrameSize, err)
	}
	x.frames = int(req.Frame_nr)
	if x.ring, err = unix.Mmap(x.fd, 0, int(req.Block_nr)*block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED); err != nil {
		if x.ring, err = unix.Mmap(x.fd, 0, int(req.Block_nr)*block, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("packet ring: mmap: %w", err)
		}
	}
	if err := unix.Bind(x.fd, &unix.SockaddrLinklayer{Protocol: htons(proto)}); err != nil {
		return fmt.Errorf("packet ring: bind: %w", err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Frames is how many frames the ring holds (packets it can queue).
func (r *PacketRing) Frames() int { return r.cfg.Frames }

// BatchSize is the most packets one Read returns.
func (r *PacketRing) BatchSize() int { return r.cfg.BatchSize }

// SetDestinations makes the ring take exactly the packets addressed to
// dsts (IPv4 and IPv6), replacing the filter at once.
func (r *PacketRing) SetDestinations(dsts []netip.Addr) error {
	r.filterMu.Lock()
	defer r.filterMu.Unlock()
	if r.closed.Load() {
		return os.ErrClosed
	}
	for i := range r.rx {
		if err := r.rx[i].attach(dsts); err != nil {
			return err
		}
	}
	return nil
}

func (x *rxRing) attach(dsts []netip.Addr) error {
	prog, err := bpf.Assemble(DestinationFilter(dsts))
	if err != nil {
		return fmt.Errorf("packet ring: filter for %d destinations: %w", len(dsts), err)
	}
	f := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		f[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	if err := unix.SetsockoptSockFprog(x.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}); err != nil {
		return fmt.Errorf("packet ring: filter for %d destinations: %w", len(dsts), err)
	}
	return nil
}

// maxFilter is classic BPF's program limit (BPF_MAXINSNS).
const maxFilter = 4096

// DestinationFilter is the classic BPF program that accepts the IP packets
// (at offset 0, as a SOCK_DGRAM packet socket sees them) addressed to one
// of dsts and to this host at L2, and rejects everything else: two instructions per IPv4
// destination, eight per IPv6 one, reached by long jumps, so about 2000
// IPv4 destinations fit in classic BPF's 4096 instructions (more: it
// rejects everything, and SetDestinations' caller must check Fits).
func DestinationFilter(dsts []netip.Addr) []bpf.Instruction {
	accept, reject := bpf.RetConstant{Val: 0xffff}, bpf.RetConstant{Val: 0}
	v4 := []bpf.Instruction{bpf.LoadAbsolute{Off: 16, Size: 4}}
	var v6 []bpf.Instruction
	for _, d := range dsts {
		switch d = d.Unmap(); {
		case d.Is4():
			v4 = append(v4, bpf.JumpIf{Cond: bpf.JumpEqual, Val: word(d.AsSlice()), SkipFalse: 1}, accept)
		case d.Is6():
			b := d.AsSlice()
			for w := 0; w < 4; w++ { // a mismatch skips to the next destination
				v6 = append(v6, bpf.LoadAbsolute{Off: uint32(24 + 4*w), Size: 4},
					bpf.JumpIf{Cond: bpf.JumpEqual, Val: word(b[4*w:]), SkipFalse: uint8(2*(3-w) + 1)})
			}
			v6 = append(v6, accept)
		}
	}
	v4 = append(v4, reject)
	v6 = append(v6, reject)
	p := []bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},                  // -3: for this host at L2 (PACKET_HOST)?
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: 1}, // -2
		reject,                               // -1
		bpf.LoadExtension{Num: bpf.ExtProto}, // 0
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: 1}, // 1
		bpf.Jump{Skip: 3}, // 2: to 6, the IPv4 part
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipFalse: 1}, // 3
		bpf.Jump{Skip: uint32(1 + len(v4))},                                 // 4: past the IPv4 part
		reject,                                                              // 5
	}
	p = append(append(p, v4...), v6...)
	if len(p) > maxFilter {
		return []bpf.Instruction{reject}
	}
	return p
}

// FilterFits says whether DestinationFilter(dsts) takes every one of them.
func FilterFits(dsts []netip.Addr) bool { return len(DestinationFilter(dsts)) > 1 }

func word(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Read copies the next packets from the rings into bufs[i][offset:], their
// lengths into sizes, and returns how many; it waits for the first.
func (r *PacketRing) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	r.readMu.Lock()
	defer r.readMu.Unlock()
	for {
		if r.closed.Load() {
			return 0, os.ErrClosed
		}
		n := r.take(&r.rx[r.first], bufs, sizes, offset, 0)
		n = r.take(&r.rx[1-r.first], bufs, sizes, offset, n)
		r.first = 1 - r.first
		if n > 0 {
			return n, nil
		}
		r.ReadPolled.Add(1)
		r.pollFds = [3]unix.PollFd{{Fd: int32(r.rx[0].fd), Events: unix.POLLIN}, {Fd: int32(r.rx[1].fd), Events: unix.POLLIN},
			{Fd: int32(r.wake), Events: unix.POLLIN}}
		if _, err := unix.Poll(r.pollFds[:], -1); err != nil && !errors.Is(err, unix.EINTR) {
			return 0, fmt.Errorf("packet ring: poll: %w", err)
		}
	}
}

// take copies the packets waiting in x into bufs[n:] and returns the new n.
func (r *PacketRing) take(x *rxRing, bufs [][]byte, sizes []int, offset, n int) int {
	size := r.cfg.FrameSize
	for n < len(bufs) {
		f := x.ring[x.next*size : (x.next+1)*size]
		status := (*uint32)(unsafe.Pointer(&f[tpStatus]))
		st := atomic.LoadUint32(status)
		if st&unix.TP_STATUS_USER == 0 {
			break
		}
		length := binary.NativeEndian.Uint32(f[tpLen:])
		snap := binary.NativeEndian.Uint32(f[tpSnaplen:])
		net := int(binary.NativeEndian.Uint16(f[tpNet:]))
		switch {
		case snap < length || net+int(snap) > len(f) || offset+int(snap) > len(bufs[n]):
			r.Truncated.Add(1)
			r.truncatedOn.Store(int32(binary.NativeEndian.Uint32(f[tpIfindex:])))
		default:
			sizes[n] = copy(bufs[n][offset:], f[net:net+int(snap)])
			if st&unix.TP_STATUS_CSUMNOTREADY != 0 {
				completeChecksum(bufs[n][offset : offset+sizes[n]])
			}
			n++
		}
		atomic.StoreUint32(status, unix.TP_STATUS_KERNEL)
		if x.next++; x.next == x.frames {
			x.next = 0
		}
	}
	return n
}

// completeChecksum fills in the TCP or UDP checksum of a packet that
// left its sender with the checksum to be done by the device (a veth peer
// in this host, or a virtio NIC): its checksum field holds only the
// pseudo-header's sum, and the ring says so (TP_STATUS_CSUMNOTREADY).
// Anything else is left as it is.
func completeChecksum(p []byte) {
	var l4 []byte
	var proto uint8
	switch {
	case len(p) >= header.IPv4HeaderLen && p[0]>>4 == 4:
		ip := header.IPv4(p)
		if hl, tl := ip.HeaderLen(), ip.TotalLen(); hl >= header.IPv4HeaderLen && hl <= tl && tl <= len(p) && !ip.IsFragment() {
			l4, proto = p[hl:tl], ip.Protocol() // not the link's padding after it
		}
	case len(p) >= header.IPv6HeaderLen && p[0]>>4 == 6:
		if end := header.IPv6HeaderLen + int(binary.BigEndian.Uint16(p[4:6])); end <= len(p) {
			l4, proto = p[header.IPv6HeaderLen:end], p[6]
		}
	}
	at := 0 // the checksum's offset
	switch proto {
	case header.ProtoTCP:
		at = 16
	case header.ProtoUDP:
		at = 6
	}
	if at == 0 || len(l4) < at+2 {
		return
	}
	c := ^header.Checksum(l4, 0)
	if c == 0 && proto == header.ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[at:], c)
}

// TruncatedOn is the index of the interface the last packet larger than a
// frame came in on (0: none yet).
func (r *PacketRing) TruncatedOn() int { return int(r.truncatedOn.Load()) }

// Stats are the packets dropped so far: larger than a frame (truncated),
// and dropped by the kernel because the ring was full (PACKET_STATISTICS,
// which resets on reading, summed here).
func (r *PacketRing) Stats() (truncated, dropped uint64) {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	for _, x := range r.rx {
		if x.fd < 0 {
			continue // closed
		}
		if st, err := unix.GetsockoptTpacketStats(x.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			r.dropped += uint64(st.Drops)
		}
	}
	return r.Truncated.Load(), r.dropped
}

// Write sends whole IP packets bufs[i][offset:] (IPv4 or IPv6, by their
// version) to their destinations, source kept; it returns how many went.
func (r *PacketRing) Write(bufs [][]byte, offset int) (int, error) {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	if r.send4 < 0 {
		return 0, os.ErrClosed
	}
	for i, b := range bufs {
		p := b[offset:]
		var err error
		switch {
		case len(p) >= header.IPv4HeaderLen && p[0]>>4 == 4:
			var sa unix.SockaddrInet4
			copy(sa.Addr[:], p[16:20])
			err = unix.Sendto(r.send4, p, 0, &sa)
		case len(p) >= header.IPv6HeaderLen && p[0]>>4 == 6:
			var sa unix.SockaddrInet6
			copy(sa.Addr[:], p[24:40])
			err = unix.Sendto(r.send6, p, 0, &sa)
		default:
			err = fmt.Errorf("packet ring: a %d-byte packet to send is not IP", len(p))
		}
		if err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

// Close stops a waiting Read (it returns os.ErrClosed) and frees the
// rings; Write, Stats and SetDestinations after it do nothing.
func (r *PacketRing) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.wake >= 0 {
		unix.Write(r.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	}
	// A Read in poll returns; whoever writes, counts or filters finishes;
	// then the rings and sockets can go.
	r.readMu.Lock()
	defer r.readMu.Unlock()
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	r.filterMu.Lock()
	defer r.filterMu.Unlock()
	var errs []error
	for i := range r.rx {
		x := &r.rx[i]
		if x.ring != nil {
			errs = append(errs, unix.Munmap(x.ring))
			x.ring = nil
		}
	}
	for _, fd := range []*int{&r.rx[0].fd, &r.rx[1].fd, &r.wake, &r.send4, &r.send6} {
		if *fd >= 0 {
			errs = append(errs, unix.Close(*fd))
			*fd = -1
		}
	}
	return errors.Join(errs...)
}
