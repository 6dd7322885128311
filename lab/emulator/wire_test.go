package emulator

import (
	"context"
	"encoding/binary"
	"math"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
)

// emulated builds A—WAN—B with one emulated uplink.
// requireRoot skips without root, or fails in CI.
func requireRoot(t *testing.T) { labtest.RequireRoot(t) }

// newID returns a run id whose leftovers fail the test.
func newID(t *testing.T) string { t.Helper(); return labtest.NewID(t) }

func emulated(t *testing.T, ab, ba Params) (*netns.Net, *WAN) {
	t.Helper()
	requireRoot(t)
	n, err := WANTopology(1).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	e, err := StartWAN(n, [][2]Params{{ab, ba}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return n, e
}

// udpPair returns a sender in A and a receiver in B on the uplink.
func udpPair(t *testing.T, n *netns.Net) (send, recv *net.UDPConn) {
	t.Helper()
	if err := n.NS("b").Do(func() (err error) {
		recv, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(netns.UplinkAddr(0, 2))})
		return
	}); err != nil {
		t.Fatal(err)
	}
	recv.SetReadBuffer(16 << 20)
	if err := n.NS("a").Do(func() (err error) {
		send, err = net.DialUDP("udp4", nil, recv.LocalAddr().(*net.UDPAddr))
		return
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Close(); recv.Close() })
	// Warm the path (ARP) before measuring: await one datagram through.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	buf := make([]byte, 2048)
	for ctx.Err() == nil {
		send.Write([]byte("warm"))
		recv.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, _ := recv.Read(buf); n == 4 {
			break
		}
	}
	recv.SetReadDeadline(time.Time{})
	return send, recv
}

func TestEmulatorDelay(t *testing.T) {
	n, _ := emulated(t, Params{Delay: 10 * time.Millisecond}, Params{Delay: 10 * time.Millisecond})
	send, recv := udpPair(t, n)
	const count = 300
	go func() {
		b := make([]byte, 64)
		for i := 0; i < count; i++ {
			binary.BigEndian.PutUint64(b, uint64(time.Now().UnixNano()))
			send.Write(b)
			time.Sleep(time.Millisecond)
		}
	}()
	var lat []time.Duration
	buf := make([]byte, 2048)
	recv.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(lat) < count {
		m, err := recv.Read(buf)
		if err != nil {
			t.Fatalf("received %d of %d: %v", len(lat), count, err)
		}
		if m == 64 {
			lat = append(lat, time.Duration(time.Now().UnixNano()-int64(binary.BigEndian.Uint64(buf))))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, l := range lat {
		sum += l
	}
	mean, p50, p99 := sum/time.Duration(len(lat)), lat[len(lat)/2], lat[len(lat)*99/100]
	t.Logf("one-way delay set 10ms: mean %v p50 %v p99 %v", mean.Round(time.Microsecond), p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	if (mean-10*time.Millisecond).Abs() > time.Millisecond || (p50-10*time.Millisecond).Abs() > time.Millisecond {
		t.Fatalf("delay mean %v p50 %v, want 10ms ±1ms", mean, p50)
	}
}

func TestEmulatorLoss(t *testing.T) {
	const rate, count = 0.02, 10000
	n, e := emulated(t, Params{Loss: rate}, Params{})
	send, recv := udpPair(t, n)
	before := e.Wires[0].AB.Stats.Frames.Load() + e.Wires[0].AB.Stats.DropLoss.Load()
	got := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		k := 0
		for {
			recv.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := recv.Read(buf); err != nil {
				got <- k
				return
			}
			k++
		}
	}()
	b := make([]byte, 200)
	for i := 0; i < count; i++ {
		send.Write(b)
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // stay below the socket buffers
		}
	}
	k := <-got
	offered := e.Wires[0].AB.Stats.Frames.Load() + e.Wires[0].AB.Stats.DropLoss.Load() - before
	loss := 1 - float64(k)/count
	t.Logf("loss set 2%%: %d of %d received, measured %.2f%% (emulator saw %d frames)", k, count, 100*loss, offered)
	if math.Abs(loss-rate) > 0.2*rate {
		t.Fatalf("loss %.4f, want 0.02 ±20%%", loss)
	}
}

func TestEmulatorRate(t *testing.T) {
	n, _ := emulated(t, Params{RateBps: 50e6}, Params{})
	send, recv := udpPair(t, n)
	const payload = 1400
	const frame = payload + 8 + 20 + 14 // UDP, IPv4, Ethernet: what the link carries
	stop := make(chan struct{})
	go func() { // offer ~80 Mbit/s for 3 s
		b := make([]byte, payload)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for i := 0; i < 7; i++ {
					send.Write(b)
				}
			}
		}
	}()
	time.AfterFunc(3*time.Second, func() { close(stop) })
	buf := make([]byte, 2048)
	var first, last time.Time
	count := 0
	for {
		recv.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		m, err := recv.Read(buf)
		if err != nil {
			break
		}
		if m != payload {
			continue
		}
		now := time.Now()
		if first.IsZero() {
			first = now
		} else {
			count++ // frames after the first, over first..last
		}
		last = now
	}
	rate := float64(count*frame*8) / last.Sub(first).Seconds()
	t.Logf("rate set 50 Mbit/s: measured %.2f Mbit/s over %v", rate/1e6, last.Sub(first).Round(time.Millisecond))
	if math.Abs(rate-50e6) > 0.05*50e6 {
		t.Fatalf("rate %.2f Mbit/s, want 50 ±5%%", rate/1e6)
	}
}
