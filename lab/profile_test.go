package lab

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/tunbond/tunbond/lab/emulator"
)

func TestBuiltinProfiles(t *testing.T) {
	want := []string{"dsl-lte", "fiber-lte", "lossy", "lte-trace", "ratio-10", "starlink", "symmetric", "three-mixed", "unshaped"}
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
		{"links: [{rate: 1mbit, schedule: [{after: 1s}, {rate: 2mbit}]}]", "links[0].schedule[1].after"},
		{"links: [{rate: 1mbit, schedule: [{after: 0s}]}]", "links[0].schedule[0].after"},
		{"links: [{rate: 1mbit, schedule: [{after: 1s, rate: 2mbps}]}]", "links[0].schedule[0].rate"},
		{"links: [{rate: 1mbit, schedule: [{after: 1s}, {after: 1s, delay: -3ms}]}]", "links[0].schedule[1].delay"},
		{"links: [{rate: 1mbit}, {rate: 1mbit, schedule: [{after: 1s}, {after: 1s}, {after: 2s, loss: 3}]}]", "links[1].schedule[2].loss"},
		{"links: [{rate: 1mbit, schedule: [{after: 1s, jitter: 2ms}]}]", "jitter"},
		{"links: [{rate: 1mbit, repeat: false}]", "links[0].repeat"},
		{"links: [{trace: nope}]", "links[0].trace: no trace \"nope\" (have: lte-synthetic)"},
		{"links: [{trace: ../lossy}]", "links[0].trace"},
		{"links: [{rate: 1mbit, trace: lte-synthetic}]", "links[0].trace: a trace replaces the rate"},
		{"links: [{trace: lte-synthetic, schedule: [{after: 1s, rate: 2mbit}]}]", "links[0].schedule[0].rate"},
		{"links: [{rate: 1mbit, b_to_a: {schedule: [{after: 1s, delay: soon}]}}]", "links[0].schedule[0].delay"},
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

func TestScheduleParams(t *testing.T) {
	p, err := ParseProfile("t", []byte(`links:
  - rate: 100mbit
    delay: 10ms
    jitter: 1ms
    loss: 1%
    schedule:
      - {after: 15s, rate: 50mbit}
      - {after: 15s, delay: 40ms, loss: 0%}
    b_to_a: {repeat: false, rate: 20mbit}
`))
	if err != nil {
		t.Fatal(err)
	}
	par, _ := p.Links[0].Params()
	ab, ba := par[0].Schedule, par[1].Schedule
	if ab == nil || ba == nil || !ab.Repeat || ba.Repeat {
		t.Fatalf("schedules %+v %+v: want both, A→B repeating (the default), B→A not", ab, ba)
	}
	// What a step does not name is the direction's own shape.
	want := [2][]emulator.Step{
		{{After: 15 * time.Second, RateBps: 50e6, Delay: 10 * time.Millisecond, Loss: 0.01},
			{After: 15 * time.Second, RateBps: 100e6, Delay: 40 * time.Millisecond}},
		{{After: 15 * time.Second, RateBps: 50e6, Delay: 10 * time.Millisecond, Loss: 0.01},
			{After: 15 * time.Second, RateBps: 20e6, Delay: 40 * time.Millisecond}},
	}
	for d, sc := range []*emulator.Schedule{ab, ba} {
		if len(sc.Steps) != 2 || sc.Steps[0] != want[d][0] || sc.Steps[1] != want[d][1] {
			t.Errorf("direction %d steps %+v, want %+v", d, sc.Steps, want[d])
		}
	}
	if par[0].Jitter != time.Millisecond || par[0].RateBps != 100e6 {
		t.Errorf("base A→B %+v", par[0])
	}
}

// TestStarlinkScheduleInForce runs the starlink profile's link on a fake
// clock: 150 Mbit/s, 30 ms for 15 s, then a step every 15 s, the 8 steps
// cycling every 120 s.
func TestStarlinkScheduleInForce(t *testing.T) {
	p, err := LoadProfile("starlink")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Links) != 2 {
		t.Fatalf("starlink: %d links, want a bond of two", len(p.Links))
	}
	par, _ := p.Links[0].Params()
	if par[0].Schedule == nil || par[0] == par[1] {
		t.Fatalf("starlink: no schedule, or one shared by both directions (a --direct run must refuse it): %+v", par)
	}
	t0 := time.Unix(1000, 0)
	sh := emulator.NewShaperAt(par[0], rand.New(rand.NewPCG(1, 2)), t0)
	s := time.Second
	for _, tt := range []struct {
		at    time.Duration
		mbit  float64
		delay time.Duration
	}{
		{0, 150, 30 * time.Millisecond},
		{15*s - 1, 150, 30 * time.Millisecond},
		{15 * s, 110, 40 * time.Millisecond},
		{29 * s, 110, 40 * time.Millisecond},
		{30 * s, 200, 28 * time.Millisecond},
		{45 * s, 80, 55 * time.Millisecond},
		{75 * s, 220, 25 * time.Millisecond},
		{90 * s, 95, 60 * time.Millisecond},
		{120 * s, 150, 30 * time.Millisecond},
		{135*s - 1, 150, 30 * time.Millisecond},
		{135 * s, 110, 40 * time.Millisecond}, // wrapped: the first step again
		{165 * s, 80, 55 * time.Millisecond},
		{15*s + 100*120*s, 110, 40 * time.Millisecond},
	} {
		got := sh.InForce(t0.Add(tt.at))
		if got.RateBps != tt.mbit*1e6 || got.Delay != tt.delay || got.Jitter != 2*time.Millisecond {
			t.Errorf("at %v: %g Mbit/s %v ±%v, want %g Mbit/s %v ±2ms", tt.at, got.RateBps/1e6, got.Delay, got.Jitter, tt.mbit, tt.delay)
		}
	}
	if m := p.Links[0].RateMbit(); m < 145 || m > 146 { // (110+200+80+170+220+95+140+150)/8
		t.Errorf("starlink mean rate %g Mbit/s, want 145.6", m)
	}
}

// TestLTETraceReplay replays the shipped trace on a fake clock with more
// offered than it carries: the rate delivered is the trace's.
func TestLTETraceReplay(t *testing.T) {
	if got := Traces(); len(got) != 1 || got[0] != "lte-synthetic" {
		t.Fatalf("traces %v", got)
	}
	b, _ := profileFS.ReadFile("profiles/traces/lte-synthetic.trace")
	if len(b) > 300<<10 {
		t.Errorf("trace is %d bytes; keep it under 300 KB", len(b))
	}
	p, err := LoadProfile("lte-trace")
	if err != nil {
		t.Fatal(err)
	}
	par, _ := p.Links[1].Params()
	tr := par[0].Trace
	if tr == nil || par[1].Trace != nil || par[1].RateBps != 10e6 || par[0].Delay != 40*time.Millisecond {
		t.Fatalf("lte-trace lte: A→B %+v, B→A %+v: want the trace A→B only", par[0], par[1])
	}
	if tr.Period() != time.Minute {
		t.Fatalf("trace period %v, want 60s", tr.Period())
	}
	mean := tr.MeanBps()
	if mean < 5e6 || mean > 40e6 || p.Links[1].RateMbit() != mean/1e6 {
		t.Fatalf("trace mean %.2f Mbit/s, RateMbit %.2f", mean/1e6, p.Links[1].RateMbit())
	}
	t0 := time.Unix(1000, 0)
	sh := emulator.NewShaperAt(par[0], rand.New(rand.NewPCG(1, 2)), t0)
	end := t0.Add(2 * tr.Period())
	sent := 0
	var lo, hi float64 = math.Inf(1), 0 // the rate over each second
	secBytes, sec := 0, 0
	for now := t0; now.Before(end); now = now.Add(200 * time.Microsecond) { // offered: 60 Mbit/s
		d, v := sh.Admit(now, 1500)
		if v != emulator.Pass {
			continue
		}
		if at := int(d.Sub(t0) - par[0].Delay); at/int(time.Second) != sec {
			r := float64(secBytes*8) / 1e6
			lo, hi = min(lo, r), max(hi, r)
			sec, secBytes = at/int(time.Second), 0
		}
		secBytes += 1500
		if !d.After(end.Add(par[0].Delay)) {
			sent += 1500
		}
	}
	got := float64(sent*8) / (2 * tr.Period().Seconds())
	if math.Abs(got-mean) > 0.02*mean {
		t.Fatalf("replayed %.2f Mbit/s, trace mean %.2f", got/1e6, mean/1e6)
	}
	if lo > 6 || hi < 20 {
		t.Errorf("per-second rates %.1f..%.1f Mbit/s: the trace should vary from about 5 to beyond 20", lo, hi)
	}
}
