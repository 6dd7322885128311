// Package labtest holds the preconditions of tests that need root and
// tools: they skip on a developer's machine that lacks them, and fail in CI
// (CI set), where they must run.
package labtest

import (
	"os"
	"os/exec"
	"testing"
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

// RequireTool returns the path of a command, or skips without it (fails in CI).
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; .ci/run installs it", name)
	}
	t.Skipf("%s is not installed", name)
	return ""
}
