package session

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyText(t *testing.T) {
	k, err := GenerateKey(bytes.NewReader(bytes.Repeat([]byte{0xab}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	const want = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s="
	if got := k.Base64(); got != want {
		t.Fatalf("Base64 = %q, want %q", got, want)
	}
	for _, in := range []string{want, want + "\n", "  " + want + "\r\n"} {
		p, err := ParseKey(in)
		if err != nil || p != k {
			t.Errorf("ParseKey(%q) = %x, %v; want the key", in, p, err)
		}
	}
	if _, err := GenerateKey(nil); err != nil {
		t.Fatalf("GenerateKey(crypto/rand): %v", err)
	}
}

func TestParseKeyRejects(t *testing.T) {
	good := strings.Repeat("q6ur", 10) + "q6s="
	for name, in := range map[string]string{
		"empty":       "",
		"not base64":  strings.Repeat("!", 44),
		"two lines":   good[:20] + "\n" + good[20:],
		"space":       good[:20] + " " + good[20:],
		"short":       "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6ur",
		"long":        good[:43] + "rq6urq6s=",
		"unpadded":    good[:43],
		"non-strict":  good[:42] + "t=", // padding bits not zero
		"zero":        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"two keys":    good + "\n" + good,
		"hex instead": strings.Repeat("ab", 32),
	} {
		if k, err := ParseKey(in); err == nil {
			t.Errorf("%s: ParseKey(%q) = %x, want an error", name, in, k)
		}
	}
}

func TestCheckKeyFileMode(t *testing.T) {
	for _, m := range []fs.FileMode{0o600, 0o400, 0o700} {
		if err := CheckKeyFileMode("/etc/tunbond/key", m); err != nil {
			t.Errorf("mode %04o: %v", m, err)
		}
	}
	for _, m := range []fs.FileMode{0o640, 0o604, 0o644, 0o620, 0o602, 0o610, 0o601, 0o666} {
		err := CheckKeyFileMode("/etc/tunbond/key", m)
		if err == nil {
			t.Errorf("mode %04o accepted", m)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "/etc/tunbond/key") || !strings.Contains(msg, "mode 0"+octal(m)) {
			t.Errorf("mode %04o: error %q does not name the path and mode", m, msg)
		}
	}
	if err := CheckKeyFileMode("/etc/tunbond", fs.ModeDir|0o700); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
}

func octal(m fs.FileMode) string {
	const digits = "01234567"
	p := uint32(m.Perm())
	return string([]byte{digits[p>>6&7], digits[p>>3&7], digits[p&7]})
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	k, _ := GenerateKey(bytes.NewReader(bytes.Repeat([]byte{7}, 32)))
	path := filepath.Join(dir, "key")
	if err := WriteKeyFile(path, k); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != k.Base64()+"\n" { // as genkey prints it
		t.Fatalf("key file holds %q", b)
	}
	got, err := ReadKeyFile(path)
	if err != nil || got != k {
		t.Fatalf("ReadKeyFile = %x, %v; want %x", got, err, k)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(path); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "0644") {
		t.Fatalf("world-readable key file: %v, want an error naming %s and 0644", err, path)
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing key file read")
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("not a key\n"), 0o600)
	if _, err := ReadKeyFile(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad key file: %v", err)
	}
}
