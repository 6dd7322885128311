package lab

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/tunbond/tunbond/lab/netns"
)

// The wireguard-go baseline (method "wireguard-go"): two in-process
// wireguard-go devices, one per site, over uplink 0 only, with the
// library's defaults (conn.NewDefaultBind, MTU 1420 as wg-quick sets over a
// 1500-byte uplink): what a single WireGuard tunnel in user space carries
// on one of the bond's links, and at what CPU.

// WireGuard addresses: the tunnel is 10.78.0.1/30 (site A) ↔ 10.78.0.2/30
// (site B), on device WireGuardDev in each site.
const (
	WireGuardAddrA = "10.78.0.1"
	WireGuardAddrB = "10.78.0.2"
	WireGuardDev   = "wg0"
	WireGuardPort  = 51820
	wireGuardMTU   = 1420
)

// WireGuard is a running pair of wireguard-go devices.
type WireGuard struct {
	devs []*device.Device
}

// wgKey returns a fresh private key (clamped) and its public key.
func wgKey() (priv, pub device.NoisePrivateKey, err error) {
	if _, err = rand.Read(priv[:]); err != nil {
		return
	}
	priv[0] &= 248
	priv[31] = priv[31]&127 | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	return
}

// quietTUN passes on a TUN's MTU updates but not its up and down events:
// on them a device opens or closes its UDP sockets from its event goroutine,
// on whatever thread (and so network namespace) it runs. The lab brings the
// device up itself, inside the site's namespace.
type quietTUN struct {
	tun.Device
	events chan tun.Event
}

func newQuietTUN(t tun.Device) *quietTUN {
	q := &quietTUN{Device: t, events: make(chan tun.Event, 4)}
	go func() {
		for e := range t.Events() {
			if e&tun.EventMTUUpdate != 0 {
				q.events <- tun.EventMTUUpdate
			}
		}
		close(q.events)
	}()
	return q
}

func (q *quietTUN) Events() <-chan tun.Event { return q.events }

// StartWireGuard starts a wireguard-go device in site A and in site B of a
// two-site topology, peers over uplink 0, with keys made for this run, and
// returns once they have shaken hands. log (nil: discard) gets the devices'
// errors.
func StartWireGuard(ctx context.Context, n *netns.Net, log *slog.Logger) (_ *WireGuard, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var priv, pub [2]device.NoisePrivateKey
	for i := range priv {
		if priv[i], pub[i], err = wgKey(); err != nil {
			return nil, fmt.Errorf("wireguard-go: key: %w", err)
		}
	}
	wg := &WireGuard{}
	defer func() {
		if err != nil {
			wg.Close()
		}
	}()
	// B first: A's first handshake, sent as it comes up, then finds B
	// listening (else it is tried again only after 5 s).
	for _, i := range []int{1, 0} {
		ns := n.NS([]string{"a", "b"}[i])
		local, peer := []string{WireGuardAddrA, WireGuardAddrB}[i], []string{WireGuardAddrB, WireGuardAddrA}[i]
		uapi := fmt.Sprintf("private_key=%s\nlisten_port=%d\npublic_key=%s\nendpoint=%s:%d\nallowed_ip=%s/32\n",
			hex.EncodeToString(priv[i][:]), WireGuardPort, hex.EncodeToString(pub[1-i][:]),
			netns.UplinkAddr(0, 2-i), WireGuardPort, peer)
		if i == 0 {
			// A keepalive on Up starts the handshake before the flow does.
			uapi += "persistent_keepalive_interval=25\n"
		}
		if err := startWireGuardDev(ns, wg, uapi, local, log.With("site", ns.Name)); err != nil {
			return wg, fmt.Errorf("wireguard-go: site %s: %w", ns.Name, err)
		}
	}
	if err := wg.waitHandshake(ctx, 10*time.Second); err != nil {
		return wg, err
	}
	return wg, nil
}

// startWireGuardDev creates the TUN, the device and its UDP sockets inside
// ns (they belong to the namespace of the thread that creates them), then
// sets the TUN's address and brings it up through ns's netlink handle.
func startWireGuardDev(ns *netns.Namespace, wg *WireGuard, uapi, addr string, log *slog.Logger) error {
	logger := &device.Logger{Verbosef: device.DiscardLogf,
		Errorf: func(format string, args ...any) { log.Error(fmt.Sprintf(format, args...)) }}
	if err := ns.Do(func() error {
		t, err := tun.CreateTUN(WireGuardDev, wireGuardMTU)
		if err != nil {
			return fmt.Errorf("TUN: %w", err)
		}
		dev := device.NewDevice(newQuietTUN(t), conn.NewDefaultBind(), logger)
		wg.devs = append(wg.devs, dev)
		if err := dev.IpcSet(uapi); err != nil {
			return err
		}
		return dev.Up() // opens the bind's sockets, on this thread
	}); err != nil {
		return err
	}
	l, err := ns.NL.LinkByName(WireGuardDev)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(addr + "/30")
	if err != nil {
		return err
	}
	if err := ns.NL.AddrAdd(l, a); err != nil {
		return fmt.Errorf("address: %w", err)
	}
	return ns.NL.LinkSetUp(l)
}

// waitHandshake waits until site A's device has a session with B's.
func (wg *WireGuard) waitHandshake(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		s, err := wg.devs[0].IpcGet()
		if err != nil {
			return fmt.Errorf("wireguard-go: %w", err)
		}
		sc := bufio.NewScanner(strings.NewReader(s))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "last_handshake_time_sec="); ok && v != "0" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("wireguard-go: no handshake within %v", within)
			}
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close closes both devices: their sockets, and their TUNs, which go with
// the last file that holds them.
func (wg *WireGuard) Close() {
	for _, d := range wg.devs {
		d.Close()
	}
	wg.devs = nil
}
