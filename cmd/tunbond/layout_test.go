package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/tunbond/tunbond/"

// TestLayering checks the import rules of docs/design.md on what `go list
// -deps` says each package links, so a shortcut across layers fails here.
func TestLayering(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps=false", "-f", `{{.ImportPath}} {{join .Deps " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{} // package → the module's packages it links (transitively)
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		deps[pkg] = nil
		for _, d := range f[1:] {
			if strings.HasPrefix(d, module) {
				deps[pkg] = append(deps[pkg], strings.TrimPrefix(d, module))
			}
		}
	}
	for _, must := range []string{"tunnel/header", "tunnel/encap", "tunnel/conn", "tunnel/session", "scheduler/path", "scheduler/lb",
		"reorder", "endpoints/host", "endpoints/config", "endpoints/ctlsock", "endpoints/role", "endpoints/bond", "endpoints/director", "endpoints/realserver",
		"lab", "lab/netns", "lab/emulator", "lab/traffic"} {
		if _, ok := deps[must]; !ok {
			t.Errorf("package %s is missing", must)
		}
	}
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	roles := []string{"endpoints/bond", "endpoints/director", "endpoints/realserver"}
	for pkg, ds := range deps {
		only := func(allowed ...string) {
			for _, d := range ds {
				ok := false
				for _, a := range allowed {
					ok = ok || under(d, a)
				}
				if !ok {
					t.Errorf("%s links %s; it may link only %v of the module", pkg, d, allowed)
				}
			}
		}
		switch {
		case pkg == "tunnel/header", pkg == "reorder", pkg == "endpoints/host", pkg == "endpoints/config", pkg == "endpoints/ctlsock", pkg == "endpoints/role":
			only()
		case pkg == "tunnel/encap", pkg == "tunnel/conn", pkg == "tunnel/session", under(pkg, "scheduler"):
			only("tunnel/header")
		case under(pkg, "tunnel"):
			only("tunnel")
		case pkg == "endpoints/host/hosttest":
			only("endpoints/host")
		}
		for _, r := range roles {
			if under(pkg, r) {
				for _, other := range roles {
					for _, d := range ds {
						if other != r && under(d, other) {
							t.Errorf("role %s links role %s (through %s)", pkg, other, d)
						}
					}
				}
			}
		}
		if !under(pkg, "endpoints") && !under(pkg, "lab") && !under(pkg, "cmd") {
			for _, d := range ds {
				if under(d, "endpoints") || under(d, "lab") {
					t.Errorf("%s (below endpoints) links %s", pkg, d)
				}
			}
		}
		if under(pkg, "endpoints") {
			for _, d := range ds {
				if under(d, "lab") || under(d, "cmd") {
					t.Errorf("%s links %s", pkg, d)
				}
			}
		}
		// The lab's layers: netns below everything of the lab; traffic and
		// the emulator over netns alone; the benches (lab) over them all.
		labOnly := func(allowed ...string) {
			for _, d := range ds {
				ok := !under(d, "lab")
				for _, a := range allowed {
					ok = ok || under(d, a)
				}
				if !ok {
					t.Errorf("%s links %s; of the lab it may link only %v", pkg, d, allowed)
				}
			}
		}
		switch {
		case under(pkg, "lab/netns"):
			labOnly()
		case under(pkg, "lab/traffic"), under(pkg, "lab/emulator"), under(pkg, "lab/labtest"):
			labOnly("lab/netns")
		}
		if under(pkg, "endpoints/director") {
			for _, d := range ds {
				if d == "reorder" {
					t.Errorf("the director links the reorder buffer (%s)", pkg)
				}
			}
		}
	}
}
