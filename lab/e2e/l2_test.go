package e2e

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// TestL2JoinsTwoLANs: each site has a bridge with one LAN host on it, both
// hosts in 10.50.0.0/24, and the bond in mode l2 with its TAP on the
// bridges. The hosts ping each other; host A's neighbour table holds host
// B's MAC (ARP crossed the bond); a broadcast from A's LAN is heard on B's;
// 200 MB between the hosts arrive intact; tshark decodes GRE 0x6558 with
// Ethernet inside; stopping the endpoint removes the TAP and leaves the
// bridge as it was.
func TestL2JoinsTwoLANs(t *testing.T) {
	tshark := labtest.RequireTool(t, "tshark")
	b := startBond(t, lab.BondSpec{Uplinks: 2, Mode: bond.ModeL2, Scheduler: "rr"}) // rr: frames on both uplinks, the captured one included
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ha, hb := b.Net.NS(netns.LANHost(1)), b.Net.NS(netns.LANHost(2))

	rtts, err := traffic.Ping(ctx, ha, netns.LANAddr(2), 5, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rtts {
		if r == 0 {
			t.Fatalf("ping %d from host A to host B got no reply", i)
		}
	}
	ethB, err := hb.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	ethA, err := ha.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	neigh, err := ha.NL.NeighList(ethA.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range neigh {
		if n.IP.Equal(net.ParseIP(netns.LANAddr(2))) && n.HardwareAddr.String() == ethB.Attrs().HardwareAddr.String() {
			found = true
		}
	}
	if !found {
		t.Fatalf("host A's neighbours %v lack host B %s at %s", neigh, netns.LANAddr(2), ethB.Attrs().HardwareAddr)
	}

	// A broadcast from A's LAN, heard on B's.
	var ln *net.UDPConn
	if err := hb.Do(func() (err error) { ln, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 47000}); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 100)
		n, _, err := ln.ReadFromUDP(buf)
		if err == nil {
			got <- string(buf[:n])
		}
	}()
	if err := ha.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return err
		}
		defer c.Close()
		sc, err := c.SyscallConn()
		if err != nil {
			return err
		}
		_ = sc.Control(func(fd uintptr) { _ = setBroadcast(fd) })
		_, err = c.WriteToUDP([]byte("tunbond-l2-broadcast"), &net.UDPAddr{IP: net.ParseIP("10.50.0.255"), Port: 47000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "tunbond-l2-broadcast" {
			t.Fatalf("host B heard %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("host B did not hear host A's broadcast")
	}

	res, err := traffic.Transfer(ctx, ha, hb, netns.LANAddr(2), 200<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.SentSHA256 != res.ReceivedSHA256 {
		t.Fatal("the transfer arrived changed")
	}
	t.Logf("200 MB between the LAN hosts in %v (%.0f Mbit/s)", res.Duration.Round(time.Millisecond), res.GoodputMbps())

	pcap := capture(t, ctx, tshark, b, "ip proto 47", 60, func() {
		if _, err := traffic.Ping(ctx, ha, netns.LANAddr(2), 20, 5*time.Millisecond); err != nil {
			t.Error(err)
		}
	})
	out, err := exec.CommandContext(ctx, tshark, "-r", pcap, "-Y", "gre.proto == 0x6558", "-T", "fields", "-E", "separator=;",
		"-e", "gre.key", "-e", "eth.type", "-e", "ip.src").Output()
	if err != nil {
		t.Fatalf("tshark decode: %v", err)
	}
	frames := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		// eth.type twice: the uplink's own frame, then the one inside
		if len(f) == 3 && f[0] == "0x00000007" && strings.Count(f[1], ",") == 1 &&
			(strings.Contains(f[2], netns.LANAddr(1)) || strings.Contains(f[2], netns.LANAddr(2))) {
			frames++
		}
	}
	t.Logf("tshark decoded %d GRE packets of protocol 0x6558 carrying the LAN hosts' Ethernet frames", frames)
	if frames == 0 {
		t.Fatalf("no GRE 0x6558 packet with Ethernet inside decoded:\n%s", out)
	}

	// Stopped: the TAP goes, the bridge stays with its own port.
	a := b.Net.NS("a")
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.NL.LinkByName("tap0"); err == nil {
		t.Error("the TAP is still there after the endpoint stopped")
	}
	br, err := a.NL.LinkByName(netns.LANBridge)
	if err != nil {
		t.Fatalf("the bridge went with the endpoint: %v", err)
	}
	links, err := a.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	if strings.Join(ports, ",") != "lan0" {
		t.Errorf("the bridge's ports after the stop: %v, want [lan0]", ports)
	}
}

func setBroadcast(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
}
