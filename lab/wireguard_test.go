package lab

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// TestWireGuardPair: the two devices shake hands over uplink 0, carry a
// ping, hold their UDP sockets inside their sites' namespaces, and leave no
// TUN once closed.
func TestWireGuardPair(t *testing.T) {
	requireRoot(t)
	n, err := netns.Sites(2).Build(newID(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wg, err := StartWireGuard(ctx, n, nil)
	if err != nil {
		if wg != nil {
			wg.Close()
		}
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			wg.Close()
		}
	}()
	if _, err := traffic.PingFrom(ctx, n.NS("a"), "0.0.0.0", WireGuardAddrB, 3, 20*time.Millisecond); err != nil {
		t.Fatalf("ping through wireguard-go: %v", err)
	}
	for _, side := range []string{"a", "b"} {
		err := n.NS(side).Do(func() error {
			c, err := net.ListenPacket("udp4", ":"+strconv.Itoa(WireGuardPort))
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("site %s: listening on the WireGuard port: %v, want EADDRINUSE (the device's socket is there)", side, err)
		}
	}
	wg.Close()
	closed = true
	for _, side := range []string{"a", "b"} {
		deadline := time.Now().Add(2 * time.Second)
		for {
			_, err := n.NS(side).NL.LinkByName(WireGuardDev)
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("site %s: %s still there after Close", side, WireGuardDev)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestBenchUnshapedTunnels is a short real run on the "unshaped" profile
// (plain veths) of wireguard-go and tunbond-adaptive/udp+auth: both carry
// data and have their CPU measured; the run's key file is gone after it.
// No speed is asserted.
func TestBenchUnshapedTunnels(t *testing.T) {
	requireRoot(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	p, err := LoadProfile("unshaped")
	if err != nil {
		t.Fatal(err)
	}
	vs, err := ParseVariants("gre,udp+auth")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := RunBondBench(ctx, newID(t), BenchConfig{Profile: p, Duration: 2 * time.Second, Schedulers: []string{"adaptive"},
		Transports: vs, Note: func(m string) { t.Log(m) },
		only: map[string]bool{"wireguard-go": true, "tunbond-adaptive/udp+auth": true}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]BenchResult{}
	for _, r := range rep.Results {
		t.Logf("%-26s %7.1f Mbit/s, CPU %.0f%%, %.2f CPU s/Gbit, shares %.2f, transport %q %s",
			r.Method, r.GoodputMbps, r.CPUPct, r.CPUSPerGbit, r.LinkShare, r.Transport, r.Error)
		got[r.Method] = r
	}
	if len(rep.Results) != 2 {
		t.Errorf("%d rows, want 2", len(rep.Results))
	}
	for _, m := range []string{"wireguard-go", "tunbond-adaptive/udp+auth"} {
		r, ok := got[m]
		if !ok || r.Error != "" || r.Skipped != "" || r.GoodputMbps <= 0 || r.CPUPct <= 0 || r.CPUSPerGbit <= 0 {
			t.Errorf("%s: %+v", m, r)
		}
	}
	if r := got["tunbond-adaptive/udp+auth"]; r.Transport != "udp+auth" {
		t.Errorf("tunbond row's transport %q, want udp+auth", r.Transport)
	}
	if r := got["wireguard-go"]; r.Transport != "" || len(r.LinkShare) != 2 || r.LinkShare[0] < 0.9 {
		t.Errorf("wireguard-go: transport %q, link shares %v; want uplink 0 only", r.Transport, r.LinkShare)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("left in TMPDIR: %v", ents)
	}
}
