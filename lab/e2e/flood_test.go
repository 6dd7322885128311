package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/tunnel/header"
)

// spoofedTCP is a TCP segment from src:sport to dst:80 with flags, an
// IPv4 packet for a raw socket with IP_HDRINCL.
func spoofedTCP(src, dst netip.Addr, sport uint16, flags uint8) []byte {
	p := make([]byte, 40)
	header.EncodeIPv4(p, 40, 64, header.ProtoTCP, src.As4(), dst.As4())
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], 80)
	p[32] = 5 << 4
	p[33] = flags
	return p
}

// TestDirectorHoldsAFlood: spoofed SYN and ACK pairs from 8000 sources,
// four times a 2000-entry table, sent from the client's network while a
// loop of real requests runs: every request succeeds, the table never
// holds more than its size, and only unconfirmed entries are evicted.
func TestDirectorHoldsAFlood(t *testing.T) {
	l := startDirectorLab(t, lab.DirectorSpec{Reals: 2, Scheduler: "wlc", Connections: 2000})
	var fd int
	if err := l.Net.NS("client").Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) // IP_HDRINCL implied
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	vip := netip.MustParseAddr(lab.DirectorVIP)
	to := &unix.SockaddrInet4{Addr: vip.As4()}
	c := l.Client()
	requests := 0
	for i := 0; i < 8000; i++ {
		src := netip.AddrFrom4([4]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
		for _, fl := range []uint8{director.FlagSYN, director.FlagACK} {
			if err := unix.Sendto(fd, spoofedTCP(src, vip, 40000, fl), 0, to); err != nil {
				t.Fatal(err)
			}
		}
		if i%400 == 0 { // a real client between the spoofed ones
			resp, err := c.Get("http://" + lab.DirectorVIP + "/")
			if err != nil {
				t.Fatalf("request %d during the flood: %v (table %v)", requests, err, l.Director.TableStats())
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			requests++
		}
		if n, max := l.Director.Conns(); n > max {
			t.Fatalf("the table holds %d entries, over its %d", n, max)
		}
	}
	st := l.Director.TableStats()
	t.Logf("%d requests during a flood of 8000 spoofed handshakes: %s", requests, fmt.Sprintf("%+v", st))
	if st.Refused != 0 || st.Evicted[director.EvictUnconfirmed] == 0 || st.Evicted[director.EvictIdle] != 0 {
		t.Errorf("table stats %+v: want spoofed entries evicted, no established one, none refused", st)
	}
}
