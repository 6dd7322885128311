package lab

import (
	"testing"

	"github.com/tunbond/tunbond/lab/labtest"
)

// requireRoot skips without root, or fails in CI.
func requireRoot(t *testing.T) { labtest.RequireRoot(t) }

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
