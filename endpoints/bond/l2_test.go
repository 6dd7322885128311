package bond

import (
	"bytes"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/tunbond/tunbond/tunnel/encap"
)

// frame is an Ethernet frame from 02:..:01 to dst, of type ty, with n
// bytes of payload marked i.
func frame(dst byte, ty uint16, n int, i int) []byte {
	f := []byte{2, 0, 0, 0, 0, dst, 2, 0, 0, 0, 0, 1, byte(ty >> 8), byte(ty)}
	p := make([]byte, max(n, 2))
	p[0], p[1] = byte(i>>8), byte(i)
	return append(f, p[:n]...)
}

// TestEngineCarriesFrames: in mode l2 any frame crosses whole and in order,
// over both paths: ARP broadcasts, 802.1Q-tagged frames, IPv4; a frame
// larger than the TAP's MTU and header is dropped and counted, never
// fragmented.
func TestEngineCarriesFrames(t *testing.T) {
	for _, tt := range []struct {
		sched string
		with  func(*EngineConfig)
	}{{"rr", nil}, {"flowhash", nil}, {"rr", withAuth(true)}} {
		sched := tt.sched
		name := sched
		if tt.with != nil {
			name += " sealed"
		}
		t.Run(name, func(t *testing.T) {
			ep := newEnginePairWith(t, encap.GRE{Key: 7, Frames: true}, sched, 50*time.Millisecond, tt.with, 1, 1)
			var sent [][]byte
			for i := 0; i < 600; i++ {
				var f []byte
				switch i % 3 {
				case 0:
					f = frame(0xff, 0x0806, 28, i) // ARP, to the broadcast address (its dst is 02:..:ff here)
				case 1:
					f = frame(2, 0x8100, 100+i, i) // a VLAN-tagged frame: passed unchanged
				default:
					ping := tuntest.Ping(ep.bAddr, ep.aAddr)
					f = append(frame(2, 0x0800, 0, i)[:14], ping...)
				}
				sent = append(sent, f)
			}
			go func() {
				for _, f := range sent {
					ep.ta.Outbound <- f
				}
			}()
			for i, want := range sent {
				select {
				case got := <-ep.tb.Inbound:
					if !bytes.Equal(got, want) {
						t.Fatalf("frame %d: got %x…, want %x…", i, got[:min(len(got), 20)], want[:20])
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("%d of %d frames arrived", i, len(sent))
				}
			}
			st := ep.a.Status()
			if sched == "rr" && (st[0].TxPackets == 0 || st[1].TxPackets == 0) {
				t.Errorf("a path carried no frame: %+v", st)
			}
			big := frame(2, 0x0800, 1420+1, 0) // one byte over the TAP's MTU (1420) and header
			ep.ta.Outbound <- big
			await(t, "the too-big frame counted", func() bool { return ep.a.Stats.TooBig.Load() == 1 })
		})
	}
}

// TestL2StartsATAPOnTheBridge: mode l2 opens a TAP (here the fake TUN),
// gives it the MTU the paths leave after the encapsulation and an Ethernet
// header, enslaves it to the bridge and sets it up, with no address; Close
// leaves the host as it was, bridge included.
func TestL2StartsATAPOnTheBridge(t *testing.T) {
	body := strings.Replace(siteA, "tun: {name: tb0, address: 10.77.0.1/30}", "mode: l2\ntap: {name: tap7, bridge: br0}", 1)
	a := newSite(t, siteA)
	connect(a, newSite(t, siteB))
	a.cfg = loadConfig(t, body)
	a.rec.AddLink("br0", 1500)
	before := a.rec.State()
	d := a.deps()
	d.OpenTAP = a.tun.Open
	b, err := Start(a.cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	if b.MTU() != 1500-32-14 {
		t.Errorf("TAP MTU %d, want 1454 (1500 - GRE with key and sequence - IPv4 - Ethernet)", b.MTU())
	}
	state := strings.Join(a.rec.State(), "\n")
	if !strings.Contains(state, "link tap7 mtu 1454 up true master br0") {
		t.Errorf("the TAP is not up on the bridge:\n%s", state)
	}
	if strings.Contains(state, "dev tap7") {
		t.Errorf("the TAP got an address:\n%s", state)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if after := a.rec.State(); !slices.Equal(after, before) {
		t.Fatalf("host not restored:\nbefore %q\nafter  %q", before, after)
	}
}

// TestL2Config: mode l2 needs GRE and no TUN address; the keys are named.
func TestL2Config(t *testing.T) {
	for _, tt := range []struct{ edit, key string }{
		{"mode: l4", "mode"},
		{"mode: l2\ntun: {address: 10.77.0.1/30}", "tun.address"},
		{"mode: l2\nencap: ipip\nscheduler: flowhash", "mode"},
		{"mode: l2\ntap: {name: a-name-far-too-long-for-linux}", "tap.name"},
		{"mode: l2\ntap: {mtu: 100}", "tap.mtu"},
	} {
		body := "paths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1}]\n" + tt.edit + "\n"
		_, err := LoadConfig(writeConfig(t, body), nil)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%q: error %v, want one naming %s", tt.edit, err, tt.key)
		}
	}
	c, err := LoadConfig(writeConfig(t, "mode: l2\ntap: {bridge: br0}\npaths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1}]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := c.Encapsulation().(encap.GRE); !ok || !g.Frames || c.TAP.Name != "tap0" {
		t.Fatalf("mode l2: encapsulation %#v, tap %+v", c.Encapsulation(), c.TAP)
	}
}

// TestL2AllowedSources: in mode l2 with allowed_sources, a frame's IP
// packet is judged by its source; of the frames without IP only ARP
// passes (an MPLS or PPPoE frame could carry any IP past the check).
func TestL2AllowedSources(t *testing.T) {
	ep := newEnginePairWith(t, encap.GRE{Key: 7, Frames: true}, "rr", 50*time.Millisecond,
		withAuth(false, netip.MustParsePrefix("10.77.0.0/24")), 1)
	ip := func(src netip.Addr) []byte {
		return append(frame(2, 0x0800, 0, 0)[:14], tuntest.Ping(ep.bAddr, src)...)
	}
	arp := frame(0xff, 0x0806, 28, 1)
	for _, f := range [][]byte{frame(2, 0x8847, 60, 2), ip(netip.MustParseAddr("10.99.0.1")), arp, ip(ep.aAddr)} {
		ep.ta.Outbound <- f
	}
	for _, want := range [][]byte{arp, ip(ep.aAddr)} { // the MPLS frame and the stranger's packet never arrive
		select {
		case got := <-ep.tb.Inbound:
			if !bytes.Equal(got, want) {
				t.Fatalf("got %x…, want %x…", got[:20], want[:20])
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a frame that should pass did not")
		}
	}
	if n := ep.b.paths[0].authDrops[dropNotAllowed].Load(); n != 2 {
		t.Errorf("%d frames dropped as not allowed, want 2", n)
	}
}
