package bond

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

const twoSite = `
tun: {name: bond0, address: 10.77.0.1/30, mtu: 0}
encap: gre
key: 7
scheduler: wrr
reorder: {window: 4096, timeout: 50ms}
routing: manage
paths:
  - {name: fibre, local: 192.0.2.1, remote: 198.51.100.1, device: eth1, weight: 100}
  - {name: lte,   local: 203.0.113.9, remote: 198.51.100.2, weight: 30}
metrics: {listen: "127.0.0.1:9469"}
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "tunbond.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestLoadConfigExample(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, twoSite), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.TUN.Name != "bond0" || c.Key != 7 || c.Reorder.Timeout != 50*time.Millisecond || c.Reorder.Window != 4096 {
		t.Fatalf("decoded %+v", c)
	}
	if len(c.Paths) != 2 || c.Paths[0].Weight != 100 || c.Paths[1].Device != "" || c.Paths[0].Device != "eth1" {
		t.Fatalf("paths %+v", c.Paths)
	}
	if c.Keepalive.Interval != 200*time.Millisecond || c.Keepalive.Misses != 3 {
		t.Fatalf("keepalive defaults %+v", c.Keepalive)
	}
}

func TestCommittedExamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example configs in testdata/")
	}
	for _, f := range files {
		if _, err := LoadConfig(f, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestConfigOverrides(t *testing.T) {
	t.Setenv("TUNBOND_REORDER_TIMEOUT", "20ms")
	t.Setenv("TUNBOND_SCHEDULER", "rr")
	t.Setenv("TUNBOND_PATHS_LTE_WEIGHT", "10")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	EndpointFlags(fs)
	if err := fs.Parse([]string{"--scheduler", "flowhash", "--tun-name", "b1"}); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(writeConfig(t, twoSite), fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reorder.Timeout != 20*time.Millisecond {
		t.Errorf("env reorder.timeout: %v", c.Reorder.Timeout)
	}
	if c.Scheduler != "flowhash" || c.TUN.Name != "b1" {
		t.Errorf("flags: scheduler %q tun %q", c.Scheduler, c.TUN.Name)
	}
	if c.Paths[1].Weight != 10 {
		t.Errorf("path env weight: %d", c.Paths[1].Weight)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	tests := []struct{ edit, key string }{
		{"tun: {name: bond0, adress: 10.77.0.1/30}", `unknown key "tun.adress"`},
		{"colour: blue", `unknown key "colour"`},
		{"scheduler: fastest", "scheduler:"},
		{"encap: vxlan", "encap:"},
		{"reorder: {window: 0, timeout: 50ms}", "reorder.window"},
		{"reorder: {window: 10, timeout: soon}", "reorder.timeout"},
		{"routing: auto", "routing:"},
		{"key: -1", "key"},
		{"paths: [{name: a, local: 1.2.3, remote: 198.51.100.1}]", "paths[0].local"},
		{"paths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1, wieght: 3}]", `unknown key "paths[0].wieght"`},
		{"paths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1}, {name: a, local: 192.0.2.2, remote: 198.51.100.1}]", "paths[1].name"},
		{"paths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1, weight: 0}]", "weight"},
		{"paths: []", "paths:"},
		{"metrics: {listen: nowhere}", "metrics.listen"},
		{"paths: [{name: a, transport: quic, local: 192.0.2.1, remote: 198.51.100.1}]", "paths[0].transport"},
		{"paths: [{name: a, transport: auto, local: 192.0.2.1}]", "paths[0].remote"}, // raw GRE first: it needs the remote
		{"paths: [{name: a, transport: udp, port: 0, local: 192.0.2.1, remote: 198.51.100.1}]", "paths[0].port"},
		{"paths: [{name: a, transport: udp, local: 192.0.2.1}]", "paths[0].remote"}, // learned only with auth
		{"paths: [{name: a, local: 192.0.2.1}]", "paths[0].remote"},
		{"paths: [{name: a, transport: udp, local: 192.0.2.1, remote: 198.51.100.1}, {name: b, transport: udp, local: 192.0.2.1, remote: 198.51.100.2}]", "paths[1].port"},
		{"auth: {key_file: /nonexistent/bond.key}", "auth.key_file"},
		{"auth: {encrypt: true}", "auth.encrypt"},
		{"auth: {allowed_sources: [10.0.0.0/8]}", "auth.allowed_sources"},
	}
	for _, tt := range tests {
		body := twoSite
		top := strings.SplitN(tt.edit, ":", 2)[0]
		var kept []string
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, top+":") || (top == "paths" && strings.HasPrefix(line, "  -")) {
				continue
			}
			kept = append(kept, line)
		}
		body = strings.Join(kept, "\n") + "\n" + tt.edit + "\n"
		_, err := LoadConfig(writeConfig(t, body), nil)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: error %v, want one naming %s", tt.edit, err, tt.key)
		}
	}
}

func TestDefaultWeightIsOne(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, "tun: {address: 10.77.0.1/30}\npaths: [{name: a, local: 192.0.2.1, remote: 198.51.100.1}]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Paths[0].Weight != 1 {
		t.Fatalf("weight %d", c.Paths[0].Weight)
	}
}

// The reorder keys the lab measured with are the defaults a user gets, and
// their TUNBOND_* variables work (viper reads env only for keys it knows).
func TestReorderDefaultsAreTheLabs(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, twoSite), nil) // sets reorder.window and timeout only
	if err != nil {
		t.Fatal(err)
	}
	if c.Reorder.LossGrace != time.Millisecond || !c.Reorder.Adaptive {
		t.Fatalf("reorder.loss_grace %v, reorder.adaptive %v; want 1ms and true", c.Reorder.LossGrace, c.Reorder.Adaptive)
	}
	d, err := Defaults()
	if err != nil {
		t.Fatal(err)
	}
	if d.Reorder.LossGrace != time.Millisecond || !d.Reorder.Adaptive || d.Reorder.Timeout != 50*time.Millisecond ||
		d.Control.Socket != DefaultControlSocket || d.RouteTable != 7700 {
		t.Fatalf("Defaults() %+v", d)
	}

	t.Setenv("TUNBOND_REORDER_LOSS_GRACE", "5ms")
	t.Setenv("TUNBOND_REORDER_ADAPTIVE", "false")
	c, err = LoadConfig(writeConfig(t, twoSite), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reorder.LossGrace != 5*time.Millisecond || c.Reorder.Adaptive {
		t.Fatalf("env ignored: reorder.loss_grace %v, reorder.adaptive %v", c.Reorder.LossGrace, c.Reorder.Adaptive)
	}
}

func TestReorderKeysFromTheFile(t *testing.T) {
	body := strings.Replace(twoSite, "reorder: {window: 4096, timeout: 50ms}", "reorder: {window: 4096, timeout: 50ms, loss_grace: 2ms, adaptive: false}", 1)
	c, err := LoadConfig(writeConfig(t, body), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reorder.LossGrace != 2*time.Millisecond || c.Reorder.Adaptive {
		t.Fatalf("reorder %+v", c.Reorder)
	}
}

// TestRouteTablesAvoidTheKernels: path i uses table route_table+i, so a
// range that reaches 253..255 (default, main, local) is refused, naming the key.
func TestRouteTablesAvoidTheKernels(t *testing.T) {
	paths := "paths:\n  - {name: a, local: 192.0.2.1, remote: 198.51.100.1}\n  - {name: b, local: 192.0.2.2, remote: 198.51.100.2}\n"
	for table, ok := range map[int]bool{251: true, 252: false, 253: false, 254: false, 255: false, 256: true, 7700: true} {
		body := "tun: {address: 10.77.0.1/30}\nroute_table: " + fmt.Sprint(table) + "\n" + paths
		_, err := LoadConfig(writeConfig(t, body), nil)
		if ok != (err == nil) {
			t.Errorf("route_table %d with 2 paths: %v", table, err)
		}
		if err != nil && !strings.Contains(err.Error(), "route_table") {
			t.Errorf("route_table %d: the error does not name the key: %v", table, err)
		}
	}
}

// TestAuthConfig: a key file tunbond genkey wrote, readable by its owner
// only, turns auth on, and a learned remote is allowed on a udp path; a
// file the group may read is refused by name, as is a prefix that is not
// one, and checksum and ipip with auth.
func TestAuthConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "bond.key")
	if err := os.WriteFile(key, []byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "tun: {address: 10.77.0.1/30}\nauth: {key_file: " + key + ", encrypt: true, allowed_sources: [10.77.0.0/30, '2001:db8::/64']}\n" +
		"paths: [{name: lte, transport: udp, local: 192.0.2.1}, {name: fibre, local: 192.0.2.2, remote: 198.51.100.1}]\n"
	c, err := LoadConfig(writeConfig(t, base), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Auth.Encrypt || c.Paths[0].Port != 4754 || c.Paths[0].Transport != "udp" || c.Paths[1].Transport != "gre" {
		t.Fatalf("decoded %+v", c)
	}
	if got := c.pathOverhead(0) - c.pathOverhead(1); got != 8 {
		t.Errorf("a udp path costs %d bytes more than a raw one, want 8 (its UDP header)", got)
	}
	for _, tt := range []struct {
		name, body, key string
		mode            os.FileMode
	}{
		{"group-readable key", base, "auth.key_file", 0o640},
		{"bad prefix", strings.Replace(base, "10.77.0.0/30", "10.77.0.0/33", 1), "auth.allowed_sources", 0o600},
		{"checksum", base + "checksum: true\n", "checksum", 0o600},
		{"ipip", base + "encap: ipip\nscheduler: flowhash\n", "auth.key_file", 0o600},
	} {
		if err := os.Chmod(key, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadConfig(writeConfig(t, tt.body), nil)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: error %v, want one naming %s", tt.name, err, tt.key)
		}
	}
}
