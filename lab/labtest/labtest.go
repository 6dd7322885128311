// Package labtest holds the preconditions of tests that need root and
// tools: they skip on a developer's machine that lacks them, and fail in CI
// (CI set), where they must run.
package labtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tunbond/tunbond/lab/netns"
)

// RequireRoot skips without root, or fails in CI.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("namespace tests need root, and CI runs them")
	}
	t.Skip("needs root (network namespaces, TUN, raw sockets)")
}

// debPackages names the Debian package of each optional tool the tests use.
var debPackages = map[string]string{
	"iperf3": "iperf3", "haproxy": "haproxy", "tshark": "tshark", "tcpdump": "tcpdump",
	"ping": "iputils-ping", "bird": "bird2", "mptcpize": "mptcpd", "nft": "nftables",
}

// RequireTool is the one check of a test's optional tool: it returns the
// command's path, or skips the test saying what is missing when CI is
// unset, or fails it when CI is set (CI installs every tool: .ci/run).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	install := name
	if pkg, ok := debPackages[name]; ok {
		install = "apt-get install " + pkg
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed (%s), and CI runs every test; .ci/run installs it", name, install)
		return ""
	}
	t.Skipf("%s is not installed (%s); skipped because CI is unset", name, install)
	return ""
}

// NewID returns a run id for a test's namespaces (netns.RunID) and
// registers a check that nothing of the run is left once the test's own
// cleanups have run.
func NewID(t testing.TB) string {
	t.Helper()
	id := netns.RunID()
	t.Cleanup(func() {
		left, err := netns.Leftovers(id)
		if err != nil {
			t.Error(err)
		}
		if len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	return id
}

// BuildTunbond builds the tunbond command into the test's temporary
// directory and returns its path, for tests that run it as a user does.
func BuildTunbond(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tunbond")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/tunbond/tunbond/cmd/tunbond").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
