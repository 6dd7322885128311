package e2e

import (
	"testing"

	"github.com/tunbond/tunbond/lab/labtest"
)

// requireRoot skips without root, or fails in CI.
func requireRoot(t *testing.T) { labtest.RequireRoot(t) }

// newID returns a run id whose leftovers fail the test.
func newID(t *testing.T) string { t.Helper(); return labtest.NewID(t) }
