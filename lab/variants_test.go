package lab

import (
	"os"
	"strings"
	"testing"
)

func TestParseVariants(t *testing.T) {
	vs, err := ParseVariants("gre, udp,gre+auth,udp+auth,gre+encrypt,udp+encrypt,gre+l2,udp+auth+l2")
	if err != nil {
		t.Fatal(err)
	}
	want := []Variant{{"gre", "gre", false, false, false}, {"udp", "udp", false, false, false}, {"gre+auth", "gre", true, false, false},
		{"udp+auth", "udp", true, false, false}, {"gre+encrypt", "gre", true, true, false}, {"udp+encrypt", "udp", true, true, false},
		{"gre+l2", "gre", false, false, true}, {"udp+auth+l2", "udp", true, false, true}}
	if len(vs) != len(want) {
		t.Fatalf("%+v", vs)
	}
	for i := range want {
		if vs[i] != want[i] {
			t.Errorf("%d: %+v, want %+v", i, vs[i], want[i])
		}
	}
	if vs, err := ParseVariants(""); err != nil || len(vs) != 1 || vs[0].Name != "gre" {
		t.Errorf("empty: %+v %v, want gre", vs, err)
	}
	for _, bad := range []string{"tcp", "udp+", "gre+sign", "auth", "ipip+auth", "udp,udp", "l2", "gre+l2+auth"} {
		_, err := ParseVariants(bad)
		if err == nil {
			t.Errorf("%q: no error", bad)
			continue
		}
		if bad != "udp,udp" && !strings.Contains(err.Error(), "valid: "+strings.Join(Variants, ", ")) {
			t.Errorf("%q: %v, want the valid ones listed", bad, err)
		}
	}
}

// TestRunKey: the run's key file is what `tunbond genkey` writes, read by
// root only, and goes with its directory.
func TestRunKey(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	path, remove, err := writeRunKey()
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if len(b) != 45 || b[44] != '\n' {
		t.Errorf("key file %q, want 44 base64 characters and a newline", b)
	}
	remove()
	if ents, _ := os.ReadDir(os.TempDir()); len(ents) != 0 {
		t.Errorf("left: %v", ents)
	}
}
