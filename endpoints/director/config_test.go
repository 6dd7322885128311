package director

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "director.yaml")
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

const example = `
tun: {name: vs0}
local: 10.20.0.2
services:
  - proto: tcp
    vip: 10.99.0.10:80
    scheduler: mh
    persistent: 300s
    reals:
      - {address: 10.30.0.2:80, weight: 3}
      - {address: 10.30.1.2}
`

func TestDirectorConfig(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, example), nil)
	if err != nil {
		t.Fatal(err)
	}
	rules, _ := c.Rules()
	want := "-A -t 10.99.0.10:80 -s mh -p 300\n-a -t 10.99.0.10:80 -r 10.30.0.2:80 -i -w 3\n-a -t 10.99.0.10:80 -r 10.30.1.2 -i -w 1\n"
	if rules != want {
		t.Fatalf("rules\n%s\nwant\n%s", rules, want)
	}
	rc := c.RunConfig()
	if rc.Timeouts[StateEstablished] != 900*time.Second || rc.Check.Type != "tcp" || rc.Connections != 1<<20 || rc.Ingress != "tun" {
		t.Fatalf("run config %+v", rc)
	}
	if c, err := LoadConfig(writeConfig(t, "local: 10.20.0.2\ningress: ring\n"), nil); err != nil || c.RunConfig().Ingress != "ring" {
		t.Fatalf("ingress: ring: %v", err)
	}
	// Only the TUN and the socket: a director with no services.
	c, err = LoadConfig(writeConfig(t, "local: 10.20.0.2\n"), nil)
	if err != nil || len(c.Services) != 0 || c.Control.Socket != DefaultAdminSocket {
		t.Fatalf("minimal config: %+v %v", c, err)
	}
	if c.Control.Socket != DefaultAdminSocket {
		t.Fatal("director and adm must default to the same socket")
	}
}

func TestDirectorConfigErrorsNameTheKey(t *testing.T) {
	for _, tt := range []struct{ body, want string }{
		{"local: 10.20.0.2\ncolour: red\n", `unknown key "colour"`},
		{"local: nowhere\n", "local"},
		{"local: 10.20.0.2\nservices: [{proto: sctp, vip: 10.99.0.10:80}]\n", "services[0].proto"},
		{"local: 10.20.0.2\nservices: [{proto: tcp, vip: 10.99.0.10:80, scheduler: best}]\n", "services[0].scheduler"},
		{"local: 10.20.0.2\nservices: [{proto: tcp, vip: 10.99.0.10:80, reals: [{address: x}]}]\n", "services[0].reals[0].address"},
		{"local: 10.20.0.2\nservices: [{proto: tcp, vip: 10.99.0.10:80, reals: [{address: 10.1.1.1, wieght: 2}]}]\n", "wieght"},
		{"local: 10.20.0.2\ncheck: {type: ping}\n", "check.type"},
		{"local: 10.20.0.2\ntimeouts: {tcp: 1ms}\n", "timeouts.tcp"},
		{"local: 10.20.0.2\ningress: xdp\n", `ingress: "xdp" is not tun or ring`},
	} {
		_, err := LoadConfig(writeConfig(t, tt.body), nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.body, err, tt.want)
		}
	}
}

// TestDirectorBGPConfig: a bgp section gets its peers' defaults (hold time
// 9 s, port 179) and reaches the running config; without one nothing
// changes; mistakes name their key.
func TestDirectorBGPConfig(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, "local: 10.20.0.2\nbgp: {asn: 65001, router_id: 10.20.0.2, peers: [{address: 10.20.0.1, asn: 65000}]}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rc := c.RunConfig()
	if rc.BGP == nil || rc.BGP.Peers[0].HoldTime != 9*time.Second || rc.BGP.Peers[0].Port != 179 {
		t.Fatalf("bgp %+v", rc.BGP)
	}
	c, err = LoadConfig(writeConfig(t, "local: 10.20.0.2\n"), nil)
	if err != nil || c.RunConfig().BGP != nil {
		t.Fatalf("no bgp section: %+v, %v", c.RunConfig().BGP, err)
	}
	for _, tt := range []struct{ body, key string }{
		{"bgp: {asn: 65001, router_id: nowhere, peers: [{address: 10.20.0.1, asn: 65000}]}", "bgp.router_id"},
		{"bgp: {asn: 65001, router_id: 10.20.0.2}", "bgp.peers"},
		{"bgp: {asn: 65001, router_id: 10.20.0.2, peers: [{address: 10.20.0.1}]}", "bgp.peers[0].asn"},
		{"bgp: {asn: 65001, router_id: 10.20.0.2, peers: [{address: 10.20.0.1, asn: 65000, hold_time: 1s}]}", "bgp.peers[0].hold_time"},
		{"bgp: {router_id: 10.20.0.2, peers: [{address: 10.20.0.1, asn: 65000}]}", "bgp.asn"},
	} {
		_, err := LoadConfig(writeConfig(t, "local: 10.20.0.2\n"+tt.body+"\n"), nil)
		if err == nil || !strings.Contains(err.Error(), tt.key) {
			t.Errorf("%s: error %v, want one naming %s", tt.body, err, tt.key)
		}
	}
}
