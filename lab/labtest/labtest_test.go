package labtest

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Skip and Fatal instead of stopping.
type recorder struct {
	testing.TB
	skipped, failed string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Skipf(f string, args ...any)  { r.skipped = sprintf(f, args...) }
func (r *recorder) Fatalf(f string, args ...any) { r.failed = sprintf(f, args...) }
func (r *recorder) Skip(args ...any)             { r.skipped = sprintf("%v", args...) }
func (r *recorder) Fatal(args ...any)            { r.failed = sprintf("%v", args...) }
func sprintf(f string, args ...any) string       { return strings.TrimSpace(fmt.Sprintf(f, args...)) }

func TestRequireTool(t *testing.T) {
	const missing = "tunbond-no-such-tool"
	for _, tt := range []struct {
		ci         string
		skip, fail bool
	}{{"", true, false}, {"true", false, true}} {
		t.Setenv("CI", tt.ci)
		r := &recorder{}
		if p := RequireTool(r, missing); p != "" {
			t.Fatalf("CI=%q: path %q for a missing tool", tt.ci, p)
		}
		if (r.skipped != "") != tt.skip || (r.failed != "") != tt.fail {
			t.Fatalf("CI=%q: skipped %q failed %q", tt.ci, r.skipped, r.failed)
		}
		if why := r.skipped + r.failed; !strings.Contains(why, missing+" is not installed") {
			t.Errorf("CI=%q: reason %q does not name the tool", tt.ci, why)
		}
	}
	t.Setenv("CI", "true")
	r := &recorder{}
	if p := RequireTool(r, "sh"); p == "" || r.skipped != "" || r.failed != "" {
		t.Fatalf("sh: path %q skipped %q failed %q", p, r.skipped, r.failed)
	}
}
