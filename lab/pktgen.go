package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/tunnel/header"
)

// A packet generator for the director's small-packet benchmark: whole
// Ethernet frames written onto a veth with an AF_PACKET socket, so no
// UDP stack and no router stand between the sender and the director; and
// a sink that drops what the director sends on the wire (see sinkTunnels).

// smallIPBytes is the size of the benchmark's IP packets: 20 bytes of IPv4
// header, 8 of UDP and 36 of payload.
const smallIPBytes = 64

// udpFrames returns n Ethernet frames of IPv4 UDP packets of ipBytes each
// from src:sport+i to dst:dport (sport+i wraps within 16 bits), UDP
// checksum 0 (none), IP header checksum set.
func udpFrames(dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, ipBytes, n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		f := make([]byte, 14+ipBytes)
		copy(f[0:6], dstMAC)
		copy(f[6:12], srcMAC)
		binary.BigEndian.PutUint16(f[12:14], unix.ETH_P_IP)
		ip := f[14:]
		header.EncodeIPv4(ip, ipBytes, 64, header.ProtoUDP, src.As4(), dst.As4())
		ip[6] = 0x40 // DF (setFlow sums the header again)
		binary.BigEndian.PutUint16(ip[22:24], dport)
		binary.BigEndian.PutUint16(ip[24:26], uint16(ipBytes-20)) // UDP length; checksum (26:28) 0
		setFlow(f, src.As4(), sport+uint16(i))
		frames[i] = f
	}
	return frames
}

// setFlow rewrites a udpFrames frame's source address and port, and its IP
// header checksum.
func setFlow(f []byte, src [4]byte, sport uint16) {
	ip := f[14:]
	copy(ip[12:16], src[:])
	binary.BigEndian.PutUint16(ip[20:22], sport)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:12], ^header.Checksum(ip[:20], 0))
}

// newFlows hands out 5-tuples never seen before (for 2^16 * 64512
// packets): the source address walks a /16 (the fastest), the source port
// 1024..65535 (a step each time the address wraps).
type newFlows struct {
	base [4]byte // the /16
	k    uint64
}

// next rewrites frames in place, each to a new flow.
func (w *newFlows) next(frames [][]byte) {
	for _, f := range frames {
		a := w.base
		a[2], a[3] = byte(w.k>>8), byte(w.k)
		setFlow(f, a, uint16(1024+(w.k>>16)%(65536-1024)))
		w.k++
	}
}

// frameSender writes whole frames on one interface: an AF_PACKET SOCK_RAW
// socket bound to it, with PACKET_QDISC_BYPASS (straight to the driver),
// a sendmmsg of every frame of its batch per send.
type frameSender struct {
	fd     int
	frames [][]byte
	iov    []unix.Iovec
	hdrs   []unix.Mmsghdr
}

// newFrameSender opens the socket inside ns, on the interface ifname, to
// send frames (which the caller may rewrite between sends).
func newFrameSender(ns *netns.Namespace, ifname string, frames [][]byte) (*frameSender, error) {
	s := &frameSender{fd: -1, frames: frames, iov: make([]unix.Iovec, len(frames)), hdrs: make([]unix.Mmsghdr, len(frames))}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		// Protocol 0: the socket sends only (it takes no copy of what
		// arrives); the kernel reads each frame's EtherType.
		if s.fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.SetsockoptInt(s.fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fmt.Errorf("PACKET_QDISC_BYPASS: %w", err)
		}
		if err := unix.Bind(s.fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index}); err != nil {
			return fmt.Errorf("binding to %s: %w", ifname, err)
		}
		return nil
	})
	if err != nil {
		s.Close()
		return nil, err
	}
	for i, f := range frames {
		s.iov[i].Base = &f[0]
		s.iov[i].SetLen(len(f))
		s.hdrs[i].Hdr.Iov = &s.iov[i]
		s.hdrs[i].Hdr.SetIovlen(1)
	}
	return s, nil
}

// send writes the batch with one sendmmsg and returns how many frames went.
func (s *frameSender) send() (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[0])), uintptr(len(s.hdrs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func (s *frameSender) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// pinProcess sets every thread of this process to run on cpu alone, and
// returns what sets them back to the mask the process had. (Threads the
// runtime starts meanwhile inherit the pinning from their creator.)
func pinProcess(cpu int) (restore func(), err error) {
	var orig, set unix.CPUSet
	if err := unix.SchedGetaffinity(os.Getpid(), &orig); err != nil {
		return nil, err
	}
	set.Set(cpu)
	each := func(s *unix.CPUSet) {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, t := range tasks {
			if tid, err := strconv.Atoi(t.Name()); err == nil {
				unix.SchedSetaffinity(tid, s)
			}
		}
	}
	each(&set)
	each(&set) // and those started while the first pass went
	return func() { each(&orig) }, nil
}

// sinkInsns is a tc classifier (direct action) that drops IPv4 packets of
// protocol 4 (IPIP) or 47 (GRE) and passes everything else (ARP above all):
//
//	r6 = r1                       // the skb, for LD_ABS
//	r0 = *(u32 *)(r6 + 16)        // __sk_buff.protocol, network order: 0x0008 is IPv4 here
//	if r0 != 8 goto pass
//	r0 = *(u8 *)skb[23]           // LD_ABS; at tc ingress the frame starts at the MAC header: IP protocol is 14+9
//	if r0 == 4 goto drop
//	if r0 == 47 goto drop
//	pass: r0 = 0; exit            // TC_ACT_OK
//	drop: r0 = 2; exit            // TC_ACT_SHOT
var sinkInsns = []uint64{
	0xbf | 0x16<<8,          // BPF_ALU64|BPF_MOV|BPF_X r6 = r1
	0x61 | 0x60<<8 | 16<<16, // BPF_LDX|BPF_MEM|BPF_W r0 = *(u32 *)(r6+16)
	0x55 | 3<<16 | 8<<32,    // BPF_JMP|BPF_JNE|BPF_K if r0 != 8 goto +3 (pass)
	0x30 | 23<<32,           // BPF_LD|BPF_ABS|BPF_B r0 = skb[23]
	0x15 | 3<<16 | 4<<32,    // BPF_JMP|BPF_JEQ|BPF_K if r0 == 4 goto +3 (drop)
	0x15 | 2<<16 | 47<<32,   // if r0 == 47 goto +2 (drop)
	0xb7,                    // pass: r0 = 0
	0x95,                    // exit
	0xb7 | 2<<32,            // drop: r0 = 2
	0x95,                    // exit
}

// sinkTunnels puts, on ifname in ns, a clsact qdisc with an ingress BPF
// filter that drops IPIP and GRE and passes the rest; stop removes it.
//
// The director's benchmark puts it on the router's veth facing the
// director: the wire takes the director's encapsulated packets there, so
// nothing downstream (the router forwarding them, the real servers'
// agents decapsulating them) runs in the softirq that the director's
// send raises on its own core. Without IRQ time accounting that work is
// charged to whoever raised it: it would count as the director's CPU.
func sinkTunnels(ns *netns.Namespace, ifname string) (stop func() error, err error) {
	prog, err := loadSchedCls(sinkInsns, "tunnel sink")
	if err != nil {
		return nil, err
	}
	l, err := ns.NL.LinkByName(ifname)
	if err != nil {
		prog.Close()
		return nil, err
	}
	remove, err := addIngressFilter(ns, l, prog, "tunbond-sink")
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("tunnel sink: %w", err)
	}
	stop = func() error { return errors.Join(remove(), prog.Close()) }
	return stop, nil
}
