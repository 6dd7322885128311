package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab"
	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/lab/traffic"
)

// TestCaptureDecodesAsGRE captures an uplink while pinging through the bond
// and has tshark decode it: GRE with key 7 and a sequence number around the
// inner ICMP, and keepalives as GRE with the key around protocol 253.
func TestCaptureDecodesAsGRE(t *testing.T) {
	tshark := labtest.RequireTool(t, "tshark")
	b := startBond(t, lab.BondSpec{Weights: []int64{1}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pcap := capturePings(t, ctx, tshark, b, "ip proto 47", 100) // the pings, and feedback and keepalives among them and after
	out, err := exec.CommandContext(ctx, tshark, "-r", pcap, "-T", "fields", "-E", "separator=;",
		"-e", "gre.flags.key", "-e", "gre.flags.sequence_number", "-e", "gre.key", "-e", "gre.proto", "-e", "ip.proto").Output()
	if err != nil {
		t.Fatalf("tshark decode: %v", err)
	}
	data, control := 0, 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ";")
		if len(f) != 5 {
			t.Fatalf("tshark line %q", line)
		}
		if f[0] != "1" && f[0] != "True" {
			t.Fatalf("GRE without the key bit: %q", line)
		}
		if f[2] != "0x00000007" {
			t.Fatalf("GRE key %q, want 0x00000007: %q", f[2], line)
		}
		switch {
		case (f[1] == "1" || f[1] == "True") && f[3] == "0x0800" && f[4] == "47,1":
			data++
		case f[1] != "1" && f[1] != "True" && f[4] == "47,253":
			control++
		default:
			t.Fatalf("unexpected packet: %q", line)
		}
	}
	t.Logf("tshark decoded %d GRE data packets (key, sequence, inner ICMP) and %d keepalives", data, control)
	if data < 20 {
		t.Fatalf("only %d data packets decoded with key and sequence", data)
	}
}

// capturePings has tshark capture count packets matching filter on site
// A's uplink 0 while 20 pings cross the bond, and returns the pcap file.
func capturePings(t *testing.T, ctx context.Context, tshark string, b *lab.Bond, filter string, count int) string {
	t.Helper()
	return capture(t, ctx, tshark, b, filter, count, func() {
		if _, err := traffic.Ping(ctx, b.Net.NS("a"), lab.BondAddrB, 20, 5*time.Millisecond); err != nil {
			t.Error(err)
		}
	})
}

// capture has tshark capture count packets matching filter on site A's
// uplink 0 while send runs, and returns the pcap file.
func capture(t *testing.T, ctx context.Context, tshark string, b *lab.Bond, filter string, count int, send func()) string {
	t.Helper()
	pcap := filepath.Join(t.TempDir(), "ul0.pcap")
	cmd := exec.CommandContext(ctx, tshark, "-i", netns.UplinkName(0), "-f", filter, "-c", strconv.Itoa(count), "-w", pcap)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Net.NS("a").Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() && !strings.Contains(sc.Text(), "Capturing on") {
	}
	go func() {
		for sc.Scan() {
		}
	}()
	send()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("tshark capture: %v", err)
	}
	return pcap
}
