package conn

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// What raw and UDP sockets share.

// setDeviceAndBuffers binds fd to device when one is named
// (SO_BINDTODEVICE) and gives it buffer bytes to receive and send with.
// Large buffers absorb bursts from TSO-sized TUN reads; SO_RCVBUFFORCE and
// SO_SNDBUFFORCE work as root and ignore rmem_max and wmem_max; without
// them it falls back to the capped SO_RCVBUF and SO_SNDBUF, whose errors
// it ignores. On an error, what names the step that failed.
func setDeviceAndBuffers(fd int, device string, buffer int) (what string, err error) {
	if device != "" {
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, device); err != nil {
			return "bind to device " + device, err
		}
	}
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], buffer) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], buffer)
		}
	}
	return "", nil
}

// mmsg makes one recvmmsg or sendmmsg (trap) call on the n mmsghdrs from
// hdrs, for a syscall.RawConn's Read or Write callback: ready is false when
// the socket would block (the poller waits and calls again); otherwise k
// is how many messages went, or err why none did.
func mmsg(trap, fd uintptr, hdrs *unix.Mmsghdr, n int) (k int, ready bool, err error) {
	for {
		r, _, e := unix.Syscall6(trap, fd, uintptr(unsafe.Pointer(hdrs)), uintptr(n), 0, 0, 0)
		switch e {
		case 0:
			return int(r), true, nil
		case unix.EINTR:
			continue // a signal, not readiness: nothing would wake a wait for more
		case unix.EAGAIN:
			return 0, false, nil
		}
		return 0, true, e
	}
}
