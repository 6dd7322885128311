package ctlsock

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type req struct{ N int }
type resp struct {
	N     int
	Error string
}

func TestServeAndCall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ctl.sock")
	s, err := Serve(path, time.Second, func(r req) any { return resp{N: r.N * 2} },
		func(err error) any { return resp{Error: err.Error()} })
	if err != nil {
		t.Fatal(err)
	}
	var got resp
	if err := Call(path, "test", time.Second, req{N: 21}, &got); err != nil || got.N != 42 {
		t.Fatalf("call: %+v %v", got, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener on a live socket: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left after Close: %v", err)
	}
	if err := Call(path, "tunbond endpoint", time.Second, req{}, &got); err == nil || !strings.Contains(err.Error(), "tunbond endpoint") {
		t.Fatalf("call with nobody listening: %v", err)
	}
}

func TestBadRequestIsAnswered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ctl.sock")
	s, err := Serve(path, time.Second, func(r req) any { return resp{N: r.N} },
		func(err error) any { return resp{Error: "bad request: " + err.Error()} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var got resp
	if err := Call(path, "test", time.Second, "not an object", &got); err != nil || !strings.HasPrefix(got.Error, "bad request") {
		t.Fatalf("bad request: %+v %v", got, err)
	}
}

func TestStaleSocketReplacedFileRefused(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := Listen(stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	ln.Close() // a crashed run's socket: the file stays, nobody answers
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("stale socket not left: %v", err)
	}
	ln, err = Listen(stale)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln.Close()

	file := filepath.Join(dir, "precious")
	if err := os.WriteFile(file, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file at the socket path: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep me" {
		t.Fatalf("the file was touched: %q %v", b, err)
	}
}
