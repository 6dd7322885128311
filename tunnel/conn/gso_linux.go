package conn

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP segmentation offload (GSO, UDP_SEGMENT, Linux 4.18) sends a run of
// equal-size datagrams to one destination as one super-packet that the
// kernel or the NIC cuts into datagrams of gso_size bytes, the last possibly
// shorter. Generic receive offload (GRO, UDP_GRO, Linux 5.0) hands the
// receiver such a run as one datagram with its gso_size in a cmsg.
const (
	// udpMaxSegments is the kernel's limit on datagrams per super-packet
	// (UDP_MAX_SEGMENTS).
	udpMaxSegments = 64
	// The largest UDP payload of a super-packet: 64 KiB less the UDP
	// header and, for IPv4, the IP header (IPv6's payload length leaves out
	// its own header).
	udpMaxPayload4 = 1<<16 - 1 - 20 - 8
	udpMaxPayload6 = 1<<16 - 1 - 8
)

// udpMaxDatagram is the size of a buffer that holds any datagram GRO
// hands over (at most 64 segments and 64 KiB).
const udpMaxDatagram = 1 << 16

// groCtrlSpace is the control space of one UDP_GRO cmsg (an int).
var groCtrlSpace = unix.CmsgSpace(4)

// segmentCtrlSpace is the control space of one UDP_SEGMENT cmsg (a u16).
var segmentCtrlSpace = unix.CmsgSpace(2)

// initSegmentCtrl writes a UDP_SEGMENT cmsg header into c; the size goes in
// with putSegmentSize.
func initSegmentCtrl(c []byte) {
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2)) // the kernel wants exactly CMSG_LEN(sizeof(u16))
}

func putSegmentSize(c []byte, size int) {
	*(*uint16)(unsafe.Pointer(&c[unix.CmsgLen(0)])) = uint16(size)
}

// probeGSO says why UDP GSO cannot be used on fd, or "" when it can. A
// socket that answers the UDP_SEGMENT getsockopt takes the cmsg; whether the
// route's device can checksum the segments shows only on a send (EIO).
func probeGSO(fd int) string {
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		return "getsockopt UDP_SEGMENT: " + err.Error() + " (kernel before 4.18?)"
	}
	return ""
}

// enableGRO turns UDP GRO on for fd and says why it could not, or "".
func enableGRO(fd int) string {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1); err != nil {
		return "setsockopt UDP_GRO: " + err.Error() + " (kernel before 5.0?)"
	}
	return ""
}

// groSegmentSize returns the segment size of a coalesced datagram from its
// control data, or 0 when it is a plain datagram.
func groSegmentSize(ctrl []byte) int {
	for len(ctrl) >= unix.SizeofCmsghdr {
		h, data, rest, err := unix.ParseOneSocketControlMessage(ctrl)
		if err != nil {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO {
			switch {
			case len(data) >= 4: // an int since Linux 5.0
				return int(*(*int32)(unsafe.Pointer(&data[0])))
			case len(data) >= 2:
				return int(*(*uint16)(unsafe.Pointer(&data[0])))
			}
		}
		ctrl = rest
	}
	return 0
}

// gsoRefusal says why the kernel refused a super-packet when err says it
// did: EIO when the device cannot checksum the segments (or IPsec is on the
// route); EINVAL (EMSGSIZE on newer kernels) when a segment does not fit the
// path MTU (the batch's other limits, 64 segments and 64 KiB, Send keeps).
func gsoRefusal(err error) string {
	switch {
	case errors.Is(err, unix.EIO):
		return "send with UDP_SEGMENT: " + err.Error() + " (device without tx checksum offload, or IPsec on the route)"
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EMSGSIZE):
		return "send with UDP_SEGMENT: " + err.Error() + " (segments larger than the path MTU?)"
	}
	return ""
}
