package traffic

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/tunbond/tunbond/lab/netns"
)

var pingID atomic.Uint32

func init() { pingID.Store(uint32(os.Getpid()) << 4) }

// Ping sends count ICMP echo requests from ns to dst, one every interval,
// and returns the round-trip time of each reply (0 for a lost one).
func Ping(ctx context.Context, ns *netns.Namespace, dst string, count int, interval time.Duration) ([]time.Duration, error) {
	return PingFrom(ctx, ns, "0.0.0.0", dst, count, interval)
}

// PingFrom is Ping with a source address.
func PingFrom(ctx context.Context, ns *netns.Namespace, src, dst string, count int, interval time.Duration) ([]time.Duration, error) {
	var c *icmp.PacketConn
	if err := ns.Do(func() (err error) { c, err = icmp.ListenPacket("ip4:icmp", src); return }); err != nil {
		return nil, fmt.Errorf("ping: %w", err)
	}
	defer c.Close()
	to := &net.IPAddr{IP: net.ParseIP(dst)}
	id := int(pingID.Add(1)) & 0xffff
	rtts := make([]time.Duration, count)
	sent := make([]time.Time, count)
	done := make(chan struct{})
	go func() { // replies
		defer close(done)
		buf := make([]byte, 1500)
		got := 0
		for got < count { // every reply in: done, without the last second's wait
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			now := time.Now()
			m, err := icmp.ParseMessage(1, buf[:n])
			if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.ID == id && e.Seq < count && !sent[e.Seq].IsZero() && rtts[e.Seq] == 0 {
				rtts[e.Seq] = now.Sub(sent[e.Seq])
				got++
			}
		}
	}()
	for i := 0; i < count; i++ {
		msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: i, Data: []byte("tunbond-lab-ping")}}
		b, _ := msg.Marshal(nil)
		sent[i] = time.Now()
		if _, err := c.WriteTo(b, to); err != nil {
			return nil, fmt.Errorf("ping %s: %w", dst, err)
		}
		select {
		case <-ctx.Done():
			c.Close()
			<-done
			return rtts[:i+1], ctx.Err()
		case <-time.After(interval):
		}
	}
	// wait for the last reply or one second
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	<-done
	return rtts, nil
}
