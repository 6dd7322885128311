package bond

import (
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/tunbond/tunbond/tunnel/conn"
)

// TransportAuto tries raw GRE and falls back to UDP (paths[].transport:
// auto).
const TransportAuto = "auto"

// autoUplink is a path of transport auto: it receives on a raw GRE socket
// and a UDP one at once and sends on raw GRE until it falls back to UDP
// for good: when the peer is heard over UDP (it fell back, or runs udp),
// or when nothing answers over raw GRE for autoFallback (health.go).
type autoUplink struct {
	name  string
	raw   conn.Uplink
	udp   conn.Uplink
	onUDP atomic.Bool
	log   *slog.Logger
}

// autoFallback is how long an auto path waits for its first answer over
// raw GRE once another path is up, before it sends over UDP: about three
// keepalive timeouts at the defaults (3 × 200 ms × 3). autoAlone is how
// long it waits when no path comes up at all.
const (
	autoFallback = 2 * time.Second
	autoAlone    = 10 * time.Second
)

func (a *autoUplink) Send(pkts [][]byte) (int, error) {
	if a.onUDP.Load() {
		return a.udp.Send(pkts)
	}
	return a.raw.Send(pkts)
}

// Receivers are the raw socket's, then the UDP socket's.
func (a *autoUplink) Receivers() []conn.ReceiveFunc {
	return append(a.raw.Receivers(), a.udp.Receivers()...)
}

func (a *autoUplink) BatchSize() int { return min(a.raw.BatchSize(), a.udp.BatchSize()) }

func (a *autoUplink) Close() error { return errors.Join(a.raw.Close(), a.udp.Close()) }

// UseUDP sends over UDP from now on, and says why (once).
func (a *autoUplink) UseUDP(why string) {
	if a.onUDP.CompareAndSwap(false, true) {
		a.log.Warn("path falls back to GRE-in-UDP", "path", a.name, "why", why)
	}
}

// OnUDP reports whether the path sends over UDP.
func (a *autoUplink) OnUDP() bool { return a.onUDP.Load() }

func (a *autoUplink) Remote() netip.AddrPort {
	if r, ok := a.udp.(roamer); ok {
		return r.Remote()
	}
	return netip.AddrPort{}
}

func (a *autoUplink) SetRemote(ap netip.AddrPort) {
	if r, ok := a.udp.(roamer); ok {
		r.SetRemote(ap)
	}
}

// fallback is what the engine sees of an auto path's uplink (through its
// slot): whether it sends over UDP, and the switch.
type fallback interface {
	OnUDP() bool
	UseUDP(why string)
}
