package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/tunbond/tunbond/tunnel/session"
)

// TestGenkeyPrintsAKeyTheEndpointReads: one line that ParseKey takes, a
// new one each time, and no arguments accepted.
func TestGenkeyPrintsAKeyTheEndpointReads(t *testing.T) {
	var a, b bytes.Buffer
	if err := runGenkey(nil, &a); err != nil {
		t.Fatal(err)
	}
	if err := runGenkey(nil, &b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(a.String(), "\n") != 1 || !strings.HasSuffix(a.String(), "\n") {
		t.Errorf("genkey printed %q, want one line", a.String())
	}
	if _, err := session.ParseKey(a.String()); err != nil {
		t.Errorf("genkey's line does not parse: %v", err)
	}
	if a.String() == b.String() {
		t.Errorf("two runs printed the same key %q", a.String())
	}
	if err := runGenkey([]string{"extra"}, &a); err == nil {
		t.Error("genkey took an argument")
	}
}
