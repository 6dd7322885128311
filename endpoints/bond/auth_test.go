package bond

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/reorder"
	"github.com/tunbond/tunbond/tunnel/conn/conntest"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"
)

func testAuthKey(b byte) session.Key {
	var k session.Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func withAuth(encrypt bool, allowed ...netip.Prefix) func(*EngineConfig) {
	return func(c *EngineConfig) {
		c.Auth = &AuthConfig{Key: testAuthKey(1), Encrypt: encrypt, AllowedSources: allowed}
	}
}

// wireTap keeps what a ChannelUplink hands its peer.
type wireTap struct {
	mu   sync.Mutex
	pkts [][]byte
}

func (w *wireTap) tap(pkt []byte) {
	w.mu.Lock()
	w.pkts = append(w.pkts, pkt)
	w.mu.Unlock()
}

func (w *wireTap) all() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.pkts...)
}

// greOf is the GRE packet inside an outer IPv4 packet.
func greOf(pkt []byte) header.GRE { return header.GRE(pkt[header.IPv4HeaderLen:]) }

// TestAuthSealsEveryPacket: with auth, everything on the wire after the
// handshake is a sealed GRE packet; with encrypt, the inner bytes never
// show; the pings arrive intact and in order.
func TestAuthSealsEveryPacket(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		t.Run(map[bool]string{false: "auth only", true: "encrypted"}[encrypt], func(t *testing.T) {
			ep := newEnginePairWith(t, encap.GRE{Key: 7}, "rr", 50*time.Millisecond, withAuth(encrypt), 1, 1)
			var w wireTap
			f := w.tap
			ep.upA[0].Tap.Store(&f)
			ep.send(t, 500)
			pkts := w.all()
			if len(pkts) < 100 {
				t.Fatalf("%d packets on the wire", len(pkts))
			}
			marker := tuntest.Ping(ep.bAddr, ep.aAddr)[header.IPv4HeaderLen:] // ICMP header and the ping's payload
			marker = marker[:len(marker)-2]
			for i, p := range pkts {
				g := greOf(p)
				if g.Protocol() != header.EtherTypeSealed || g.HasChecksum() {
					t.Fatalf("packet %d on the wire: GRE protocol %#04x, checksum %v: not sealed", i, g.Protocol(), g.HasChecksum())
				}
				if encrypt && bytes.Contains(p, marker) {
					t.Fatalf("packet %d carries the ping in clear with encrypt", i)
				}
			}
			if ep.a.auth.handshakes.Load() == 0 || ep.b.auth.handshakes.Load() == 0 {
				t.Errorf("no session counted: %d, %d", ep.a.auth.handshakes.Load(), ep.b.auth.handshakes.Load())
			}
			if ep.a.epoch != ep.a.auth.hs.Epoch() {
				t.Errorf("the engine's epoch %x is not the handshake's %x", ep.a.epoch, ep.a.auth.hs.Epoch())
			}
		})
	}
}

// TestAuthDropsWhatFailsToOpen: with the right key and source, a plain GRE
// packet, a replayed capture, a tampered one and one under an unknown
// session never reach the TUN, each counted by its reason.
func TestAuthDropsWhatFailsToOpen(t *testing.T) {
	ep := newEnginePairWith(t, encap.GRE{Key: 7}, "rr", 50*time.Millisecond, withAuth(false), 1)
	var w wireTap
	f := w.tap
	ep.upA[0].Tap.Store(&f)
	ep.send(t, 20)
	var captured []byte
	for _, p := range w.all() {
		if g := greOf(p); g.HasSeq() { // data
			captured = p
		}
	}
	if captured == nil {
		t.Fatal("no data packet captured")
	}
	hdr := header.IPv4HeaderLen + greOf(captured).HeaderLen()

	plain := make([]byte, encap.Headroom+200)
	ping := tuntest.Ping(ep.bAddr, ep.aAddr)
	copy(plain[encap.Headroom:], ping)
	gre := encap.GRE{Key: 7}.EncapData(plain, encap.Headroom, len(ping), greOf(captured).Seq()+1)
	plainPkt := make([]byte, header.IPv4HeaderLen+len(gre))
	header.EncodeIPv4(plainPkt, len(plainPkt), 64, header.ProtoGRE, [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 1})
	copy(plainPkt[header.IPv4HeaderLen:], gre)

	tampered := append([]byte(nil), captured...) // a counter not seen yet, and a flipped bit
	tampered[hdr+11] += 100
	tampered[len(tampered)-header.SealedTagLen-1] ^= 1
	unknown := append([]byte(nil), captured...)
	unknown[hdr] ^= 0xff // the receiver index

	cases := []struct {
		name string
		pkt  []byte
		why  int
	}{
		{"replayed", captured, int(session.DropReplayed)},
		{"plain GRE", plainPkt, int(dropNotSealed)},
		{"tampered", tampered, int(session.DropBadTag)},
		{"unknown session", unknown, int(session.DropUnknownIndex)},
	}
	p := ep.b.paths[0]
	for _, c := range cases {
		before := p.authDrops[c.why].Load()
		if !ep.upB[0].Inject(c.pkt) {
			t.Fatal("inject: queue full")
		}
		await(t, c.name+" counted", func() bool { return p.authDrops[c.why].Load() == before+1 })
	}
	select {
	case got := <-ep.tb.Inbound:
		t.Errorf("a forged packet reached the TUN: %x", got)
	default:
	}
	ep.send(t, 20) // the bond goes on, and the TUN gets these 20 next: no forged one before them
}

// TestAuthAllowedSources: inner packets from outside auth.allowed_sources
// are dropped and counted; those inside pass.
func TestAuthAllowedSources(t *testing.T) {
	ep := newEnginePairWith(t, encap.GRE{Key: 7}, "rr", 50*time.Millisecond, withAuth(false, netip.MustParsePrefix("10.77.0.0/24")), 1)
	ep.send(t, 10)
	stranger := tuntest.Ping(ep.bAddr, netip.MustParseAddr("10.99.0.1"))
	ep.ta.Outbound <- stranger
	await(t, "the stranger's packet counted", func() bool {
		return ep.b.paths[0].authDrops[dropNotAllowed].Load() == 1
	})
	ep.send(t, 10)
}

// TestAuthKeysMustMatch: ends with different keys agree no session, so no
// path comes up and nothing passes; the handshakes are counted as bad tags.
func TestAuthKeysMustMatch(t *testing.T) {
	la, lb := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.1")
	ua, ub := conntest.Pair(la, lb, []uint8{header.ProtoGRE})
	mk := func(local, remote netip.Addr, u *conntest.ChannelUplink, key byte) *Engine {
		e, err := NewEngine(EngineConfig{
			Encap: encap.GRE{Key: 7}, Scheduler: "rr", Reorder: reorder.Config{Window: 1024, Timeout: 500 * time.Millisecond},
			Keepalive: 20 * time.Millisecond, Misses: 3, MTU: 1420, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Paths: []EnginePath{{Name: "p0", Weight: 1, Local: local, Remote: remote, Uplink: u}},
			Auth:  &AuthConfig{Key: testAuthKey(key)},
		}, tuntest.NewChannelTUN().TUN())
		if err != nil {
			t.Fatal(err)
		}
		e.Start()
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b := mk(la, lb, ua, 1), mk(lb, la, ub, 2)
	await(t, "both ends dropping the other's handshakes", func() bool {
		return a.paths[0].authDrops[session.DropBadTag].Load() >= 2 && b.paths[0].authDrops[session.DropBadTag].Load() >= 2
	})
	for _, e := range []*Engine{a, b} {
		if e.paths[0].upNow.Load() || e.auth.handshakes.Load() != 0 || e.auth.table.Current() != nil {
			t.Fatal("a session or a path came up between different keys")
		}
	}
}

// TestAuthRekeys: once a session is RekeyAfter old, its initiator agrees a
// new one (the engine's clock jumps; the keepalive ticker runs as usual),
// and traffic goes on, in order, across the change of keys.
func TestAuthRekeys(t *testing.T) {
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	ep := newEnginePairWith(t, encap.GRE{Key: 7}, "rr", 20*time.Millisecond, func(c *EngineConfig) {
		withAuth(true)(c)
		c.Now = clock
	}, 1, 1)
	ep.send(t, 200)
	before := ep.a.auth.handshakes.Load() + ep.b.auth.handshakes.Load()
	offset.Add(int64(RekeyAfter + time.Second))
	await(t, "a new session agreed after RekeyAfter", func() bool {
		return ep.a.auth.handshakes.Load()+ep.b.auth.handshakes.Load() >= before+2
	})
	ep.send(t, 500)
	if r := ep.b.Stats.PeerRestarts.Load(); r != 0 {
		t.Errorf("a rekey was taken for %d peer restarts", r)
	}
}
