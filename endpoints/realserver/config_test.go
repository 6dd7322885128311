package realserver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfig(t *testing.T) {
	write := func(body string) string {
		f := filepath.Join(t.TempDir(), "rs.yaml")
		os.WriteFile(f, []byte(body), 0o600)
		return f
	}
	c, _, err := LoadConfig(write("local: 10.0.0.1\ndirectors: [10.20.0.2]\nvips: [192.0.2.10, 2001:db8::10]\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.TUN != "vip0" || len(c.VIPs) != 2 || c.Directors[0].String() != "10.20.0.2" {
		t.Fatalf("%+v", c)
	}
	for _, tt := range []struct{ body, want string }{
		{"local: 10.0.0.1\nvips: [192.0.2.10]\n", "directors"},
		{"local: 10.0.0.1\ndirectors: [x]\nvips: [192.0.2.10]\n", "directors[0]"},
		{"local: 10.0.0.1\ndirectors: [10.20.0.2]\n", "vips"},
		{"local: nowhere\ndirectors: [10.20.0.2]\nvips: [192.0.2.10]\n", "local"},
		{"local: 10.0.0.1\ndirectors: [10.20.0.2]\nvips: [192.0.2.10]\nencap: vxlan\n", "encap"},
		{"local: 10.0.0.1\ndirectors: [10.20.0.2]\nvips: [192.0.2.10]\ntun: {name: averyveryverylongname}\n", "tun.name"},
		{"local: 10.0.0.1\ndirectors: [10.20.0.2]\nvips: [192.0.2.10]\nvip: 1.2.3.4\n", `unknown key "vip"`},
	} {
		_, _, err := LoadConfig(write(tt.body), nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.body, err, tt.want)
		}
	}
}
