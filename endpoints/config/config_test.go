package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

type schema struct {
	Name    string        `mapstructure:"name"`
	Timeout time.Duration `mapstructure:"timeout"`
	Paths   []struct {
		Name   string `mapstructure:"name"`
		Weight int    `mapstructure:"weight"`
	} `mapstructure:"paths"`
	Sub struct {
		On bool `mapstructure:"on"`
	} `mapstructure:"sub"`
}

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadLayers(t *testing.T) {
	file := write(t, "name: from-file\npaths:\n  - {name: a}\n  - {name: b, weight: 3}\n")
	t.Setenv("TUNBOND_SUB_ON", "true")
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("name-flag", "", "")
	if err := fs.Parse([]string{"--name-flag", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	var c schema
	err := Load(file, fs, map[string]any{"timeout": "50ms", "sub.on": false}, map[string]string{"name-flag": "name"}, &c,
		func(s Settings) {
			paths := s.Get("paths").([]any)
			DefaultEach(paths, "weight", 1)
			s.Set("paths", paths)
		})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "from-flag" || c.Timeout != 50*time.Millisecond || !c.Sub.On {
		t.Fatalf("layers: %+v", c)
	}
	if c.Paths[0].Weight != 1 || c.Paths[1].Weight != 3 {
		t.Fatalf("list defaults: %+v", c.Paths)
	}
}

func TestLoadNamesTheBadKey(t *testing.T) {
	for body, want := range map[string]string{
		"nmae: x\n":                          `unknown key "nmae"`,
		"sub: {of: true}\n":                  `unknown key "sub.of"`,
		"paths:\n  - {name: a, wieght: 2}\n": `unknown key "paths[0].wieght"`,
		"paths:\n  - 7\n":                    "paths[0]: not a mapping",
		"timeout: soon\n":                    "timeout",
	} {
		var c schema
		err := Load(write(t, body), nil, nil, nil, &c, nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", body, err, want)
		}
	}
}

func TestProblems(t *testing.T) {
	var p Problems
	if p.Err() != nil {
		t.Fatal("no problems is no error")
	}
	p.InterfaceName("tun.name", "a-name-longer-than-15")
	p.InterfaceName("tun.name", "ok0")
	p.Add("key", "%d out of range", 5)
	err := p.Err()
	if err == nil || !strings.Contains(err.Error(), "config: tun.name:") || !strings.Contains(err.Error(), "config: key: 5 out of range") {
		t.Fatalf("problems: %v", err)
	}
	if len(p) != 2 {
		t.Fatalf("%d problems, want 2", len(p))
	}
}
