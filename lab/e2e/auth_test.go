package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/endpoints/bond"
	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// rawGRE opens a raw GRE socket in ns bound to addr: it sends GRE packets
// from addr (the kernel adds the IPv4 header) and receives a copy of every
// GRE packet to addr (IPv4 header included).
func rawGRE(t *testing.T, ns *netns.Namespace, addr string) int {
	t.Helper()
	var fd int
	if err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, header.ProtoGRE); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(addr).As4()})
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	return fd
}

// dropped is how many packets site B's path dropped for reason.
func dropped(t *testing.T, b *bond.Bond, reason string) uint64 {
	t.Helper()
	return pathStatus(t, b, netns.UplinkName(0)).DroppedBy[reason]
}

// TestStrangersDoNotGetIn: with auth on raw GRE, packets with the right
// key and the peer's own source address, but no valid tag, never reach
// site B's TUN (tcpdump on it sees none) and are counted by reason: a plain
// GRE packet carrying a ping, a replayed capture of a genuine packet, and
// that capture tampered with.
func TestStrangersDoNotGetIn(t *testing.T) {
	tcpdump := labtest.RequireTool(t, "tcpdump")
	b := startBond(t, lab.BondSpec{Uplinks: 1, KeyFile: keyFile(t)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, bns := b.Net.NS("a"), b.Net.NS("b")

	// A genuine sealed data packet, as a listener on B's uplink sees it.
	tap := rawGRE(t, bns, netns.UplinkAddr(0, 2))
	if _, err := traffic.Ping(ctx, a, lab.BondAddrB, 3, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var captured []byte
	buf := make([]byte, 9000)
	for captured == nil {
		n, _, err := unix.Recvfrom(tap, buf, 0)
		if err != nil {
			t.Fatalf("no sealed data packet seen on site B's uplink: %v", err)
		}
		ip := header.IPv4(buf[:n])
		g := header.GRE(ip.Payload())
		if g.HasSeq() && g.Protocol() == header.EtherTypeSealed {
			captured = append([]byte(nil), ip.Payload()...)
		}
	}

	// tcpdump on B's TUN, for what gets through.
	cmd := exec.CommandContext(ctx, tcpdump, "-i", "bond0", "-n", "-l", "-A", "icmp")
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := bns.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "listening on") {
	}

	// A stranger's ping, in plain GRE with the key and a sequence ahead.
	const marker = "tunbond-stranger"
	ping := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	ping = append(ping, marker...)
	binary.BigEndian.PutUint16(ping[2:], ^header.Checksum(ping, 0))
	inner := make([]byte, header.IPv4HeaderLen+len(ping))
	header.EncodeIPv4(inner, len(inner), 64, header.ProtoICMP, netip.MustParseAddr(lab.BondAddrA).As4(), netip.MustParseAddr(lab.BondAddrB).As4())
	copy(inner[header.IPv4HeaderLen:], ping)
	pkt := make([]byte, encap.Headroom+len(inner))
	copy(pkt[encap.Headroom:], inner)
	plain := encap.GRE{Key: 7}.EncapData(pkt, encap.Headroom, len(inner), header.GRE(captured).Seq()+10)
	tampered := append([]byte(nil), captured...)
	hdr := header.GRE(captured).HeaderLen()
	tampered[hdr+11] += 100 // a counter not seen yet
	tampered[len(tampered)-1] ^= 1

	inject := rawGRE(t, a, netns.UplinkAddr(0, 1))
	to := &unix.SockaddrInet4{Addr: netip.MustParseAddr(netns.UplinkAddr(0, 2)).As4()}
	for _, c := range []struct {
		name, reason string
		pkt          []byte
	}{
		{"a plain GRE ping", "not_sealed", plain},
		{"a replayed capture", "replayed", captured},
		{"a tampered capture", "bad_tag", tampered},
	} {
		before := dropped(t, b.B, c.reason)
		if err := unix.Sendto(inject, c.pkt, 0, to); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for dropped(t, b.B, c.reason) == before {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not counted as %s (%v)", c.name, c.reason, pathStatus(t, b.B, netns.UplinkName(0)).DroppedBy)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	// A genuine ping after them: once tcpdump shows it, it has shown all
	// that came before.
	if _, err := traffic.Ping(ctx, a, lab.BondAddrB, 1, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), "tunbond-lab-ping") && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if !strings.Contains(out.String(), "tunbond-lab-ping") {
		t.Fatalf("tcpdump on the TUN saw not even the genuine ping:\n%s", out.String())
	}
	if strings.Contains(out.String(), marker) {
		t.Fatalf("the stranger's ping reached site B's TUN:\n%s", out.String())
	}
	t.Logf("dropped on site B: %v", pathStatus(t, b.B, netns.UplinkName(0)).DroppedBy)
}

// TestCaptureDecodesGREInUDP: tshark decodes a udp path's packets as GRE
// (told with -d udp.port==4754,gre): the key, and sealed packets' protocol
// type 0x88b5.
func TestCaptureDecodesGREInUDP(t *testing.T) {
	tshark := labtest.RequireTool(t, "tshark")
	b := startBond(t, lab.BondSpec{Uplinks: 1, Transport: "udp", KeyFile: keyFile(t)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pcap := capturePings(t, ctx, tshark, b, "udp port 4754", 40)
	out, err := exec.CommandContext(ctx, tshark, "-r", pcap, "-d", "udp.port==4754,gre", "-T", "fields", "-E", "separator=;",
		"-e", "udp.dstport", "-e", "gre.key", "-e", "gre.proto", "-e", "gre.flags.sequence_number").Output()
	if err != nil {
		t.Fatalf("tshark decode: %v", err)
	}
	data := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		if len(f) != 4 || f[0] != "4754" || f[1] != "0x00000007" || f[2] != "0x88b5" {
			t.Fatalf("tshark line %q: want UDP 4754, GRE key 7, protocol 0x88b5", line)
		}
		if f[3] == "1" || f[3] == "True" {
			data++
		}
	}
	t.Logf("tshark decoded %d sealed GRE-in-UDP data packets", data)
	if data == 0 {
		t.Fatal("no data packet decoded with its sequence")
	}
}
