package lab

import (
	"strings"
	"testing"
	"time"
)

func TestBuiltinProfiles(t *testing.T) {
	want := []string{"dsl-lte", "fiber-lte", "lossy", "ratio-10", "symmetric", "three-mixed"}
	got := Profiles()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("profiles %v, want %v", got, want)
	}
	for _, name := range got {
		if _, err := LoadProfile(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	p, _ := LoadProfile("fiber-lte")
	par, _ := p.Links[1].Params()
	if par[0].RateBps != 30e6 || par[0].Delay != 40*time.Millisecond || par[0].Jitter != 5*time.Millisecond {
		t.Fatalf("fiber-lte lte: %+v", par[0])
	}
	l, _ := LoadProfile("lossy")
	par, _ = l.Links[1].Params()
	if par[0].Loss != 0.02 || par[1].Loss != 0.02 {
		t.Fatalf("lossy: %+v", par)
	}
}

func TestProfileErrorsNameTheField(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"links: [{rate: 100mbps, delay: 10ms}]", "links[0].rate"},
		{"links: [{rate: 100mbit, delay: soon}]", "links[0].delay"},
		{"links: [{rate: 100mbit, delay: 1ms}, {rate: 1mbit, loss: 2}]", "links[1].loss"},
		{"links: [{rate: 100mbit, dealy: 1ms}]", "dealy"},
		{"links: []", "links: at least one"},
		{"links: [{rate: 1mbit, a_to_b: {rate: fast}}]", "links[0].rate"},
	} {
		_, err := ParseProfile("t", []byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want one naming %s", tt.yaml, err, tt.want)
		}
	}
	if _, err := LoadProfile("nope"); err == nil || !strings.Contains(err.Error(), "symmetric") {
		t.Fatalf("unknown profile: %v", err)
	}
}

func TestPerDirectionOverride(t *testing.T) {
	p, err := ParseProfile("t", []byte("links: [{rate: 100mbit, delay: 10ms, b_to_a: {rate: 20mbit}}]"))
	if err != nil {
		t.Fatal(err)
	}
	par, _ := p.Links[0].Params()
	if par[0].RateBps != 100e6 || par[1].RateBps != 20e6 || par[1].Delay != 10*time.Millisecond {
		t.Fatalf("%+v", par)
	}
}

func TestParseLinks(t *testing.T) {
	p, err := ParseLinks("100mbit/10ms,50mbit/40ms/1%/±3ms")
	if err != nil {
		t.Fatal(err)
	}
	par, _ := p.Links[1].Params()
	if len(p.Links) != 2 || par[0].RateBps != 50e6 || par[0].Loss != 0.01 || par[0].Jitter != 3*time.Millisecond {
		t.Fatalf("%+v", par)
	}
	for _, bad := range []string{"100mbit", "fast/10ms", "1mbit/10ms/x"} {
		if _, err := ParseLinks(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
