package lab

import (
	"os"
	"testing"
)

// requireRoot skips on a developer machine without root, and fails in CI,
// where these tests must run.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("namespace tests need root, and CI runs them")
	}
	t.Skip("needs root (network namespaces, TUN, raw sockets)")
}

// newID returns a run id and registers a check that nothing of the run is
// left once the test's own cleanups have run.
func newID(t *testing.T) string {
	id := RunID()
	t.Cleanup(func() {
		left, err := Leftovers(id)
		if err != nil {
			t.Error(err)
		}
		if len(left) > 0 {
			t.Errorf("namespaces left behind: %v", left)
		}
	})
	return id
}
