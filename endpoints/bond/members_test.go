package bond

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/tunnel/conn"
)

// reopening makes s's fake uplinks open again after a close, as a socket
// opened anew on a device that came back.
func reopening(s *site) Deps {
	d := s.deps()
	d.OpenUplink = func(rc conn.RawConfig) (conn.Uplink, error) {
		u, ok := s.uplinks[rc.Local]
		if !ok {
			return nil, fmt.Errorf("no fake uplink from %v", rc.Local)
		}
		if u.Closed() {
			u = u.Reopen()
			s.uplinks[rc.Local] = u
		}
		return u, nil
	}
	return d
}

func startReopening(t *testing.T, s *site) *Bond {
	t.Helper()
	b, err := Start(s.cfg, reopening(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func pathUp(t *testing.T, b *Bond, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Engine().WaitPath(ctx, name, true); err != nil {
		t.Fatal(err)
	}
}

func status(b *Bond, name string) PathStatus {
	for _, p := range b.Engine().Status() {
		if p.Name == name {
			return p
		}
	}
	return PathStatus{}
}

// TestPathWaitsForItsAddress: a path whose local address is missing at
// start waits (said in its status, its metric and the log) while the bond
// runs on the other, and joins, with its routing, once the address comes.
func TestPathWaitsForItsAddress(t *testing.T) {
	a, b := newSite(t, siteA), newSite(t, siteB)
	connect(a, b)
	p1 := netip.MustParsePrefix("203.0.113.9/24")
	if err := a.rec.DelAddr("eth1", p1); err != nil {
		t.Fatal(err)
	}
	ba, bb := startReopening(t, a), startReopening(t, b)
	pathUp(t, ba, "p0")
	if w := status(ba, "p1").Waiting; !strings.Contains(w, "203.0.113.9 is not on any interface") {
		t.Fatalf("p1 waiting %q, want why", w)
	}
	if !strings.Contains(a.logs.String(), "path waiting") {
		t.Errorf("no log line said p1 waits:\n%s", a.logs.String())
	}
	if strings.Contains(strings.Join(a.rec.State(), "\n"), "lookup 7701") {
		t.Error("a waiting path's rule is installed")
	}
	if err := a.rec.ReplaceAddr("eth1", p1); err != nil { // the modem came up
		t.Fatal(err)
	}
	pathUp(t, ba, "p1")
	pathUp(t, bb, "p1")
	if w := status(ba, "p1").Waiting; w != "" {
		t.Fatalf("p1 up yet waiting %q", w)
	}
	if !strings.Contains(strings.Join(a.rec.State(), "\n"), "rule 7700: from 203.0.113.9/32 lookup 7701") {
		t.Errorf("p1 joined without its rule:\n%s", strings.Join(a.rec.State(), "\n"))
	}
}

// TestDeletedDeviceRejoins: a device deleted under a path sends it to
// waiting; created again with its address, the path rejoins on a new
// socket without a restart.
func TestDeletedDeviceRejoins(t *testing.T) {
	a, b := newSite(t, siteA), newSite(t, siteB)
	connect(a, b)
	ba, bb := startReopening(t, a), startReopening(t, b)
	waitUp(t, ba, bb)
	old := a.uplinks[netip.MustParseAddr("192.0.2.1")]
	a.rec.RemoveLink("eth0") // an LTE modem's reconnect
	await(t, "p0 waiting", func() bool { return status(ba, "p0").Waiting != "" })
	if !old.Closed() {
		t.Error("the socket of the deleted device is still open")
	}
	a.rec.AddLink("eth0", 1500)
	if err := a.rec.ReplaceAddr("eth0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	await(t, "p0 rejoined", func() bool { return status(ba, "p0").Waiting == "" })
	pathUp(t, ba, "p0")
	pathUp(t, bb, "p0")
	if a.uplinks[netip.MustParseAddr("192.0.2.1")] == old {
		t.Error("p0 rejoined on its old socket")
	}
}

// TestNoUsablePathFailsStart: with every path's address missing, Start
// says so, path by path, and leaves nothing.
func TestNoUsablePathFailsStart(t *testing.T) {
	a := newSite(t, siteA)
	for _, x := range []struct{ link, p string }{{"eth0", "192.0.2.1/24"}, {"eth1", "203.0.113.9/24"}} {
		if err := a.rec.DelAddr(x.link, netip.MustParsePrefix(x.p)); err != nil {
			t.Fatal(err)
		}
	}
	before := a.rec.State()
	_, err := Start(a.cfg, a.deps())
	if err == nil || !strings.Contains(err.Error(), "no path is usable") || !strings.Contains(err.Error(), "paths[1] (p1)") {
		t.Fatalf("Start: %v", err)
	}
	if after := a.rec.State(); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("a failed start left changes:\n%q\n%q", before, after)
	}
}

// TestDeviceOnlyPath: a path that names only its device takes the
// device's address, and follows it when it changes (DHCP).
func TestDeviceOnlyPath(t *testing.T) {
	body := strings.Replace(siteA, "{name: p0, local: 192.0.2.1, remote: 192.0.2.2, device: eth0}", "{name: p0, remote: 192.0.2.2, device: eth0}", 1)
	a, b := newSite(t, siteA), newSite(t, siteB)
	connect(a, b)
	a.cfg = loadConfig(t, body)
	ba, bb := startReopening(t, a), startReopening(t, b)
	waitUp(t, ba, bb)
	if got := ba.Engine().paths[0].localAs4(); got != [4]byte{192, 0, 2, 1} {
		t.Fatalf("p0's local %v, want the device's 192.0.2.1", got)
	}
	// The lease moves to .5 (the fake's peer stays wired to the path).
	moved := netip.MustParseAddr("192.0.2.5")
	a.uplinks[moved] = a.uplinks[netip.MustParseAddr("192.0.2.1")]
	if err := a.rec.ReplaceAddr("eth0", netip.PrefixFrom(moved, 24)); err != nil {
		t.Fatal(err)
	}
	if err := a.rec.DelAddr("eth0", netip.MustParsePrefix("192.0.2.1/24")); err != nil {
		t.Fatal(err)
	}
	await(t, "p0 on the new address", func() bool { return ba.Engine().paths[0].localAs4() == moved.As4() })
	if !strings.Contains(strings.Join(a.rec.State(), "\n"), "rule 7700: from 192.0.2.5/32 lookup 7700") ||
		strings.Contains(strings.Join(a.rec.State(), "\n"), "from 192.0.2.1/32") {
		t.Errorf("the rule did not follow the address:\n%s", strings.Join(a.rec.State(), "\n"))
	}
}
