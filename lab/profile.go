package lab

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tunbond/tunbond/lab/emulator"
)

//go:embed profiles/*.yaml profiles/traces/*.trace
var profileFS embed.FS

// Profile is a set of emulated uplinks.
type Profile struct {
	Name        string     `yaml:"-"`
	Description string     `yaml:"description"`
	Links       []LinkSpec `yaml:"links"`
}

// LinkSpec is one uplink as written in a profile. The top-level fields set
// both directions; a_to_b and b_to_a override them for one.
type LinkSpec struct {
	Name  string `yaml:"name"`
	Shape `yaml:",inline"`
	AToB  *Shape `yaml:"a_to_b"`
	BToA  *Shape `yaml:"b_to_a"`
}

// Shape is a link's character in one direction, in tc's words.
type Shape struct {
	Rate      string     `yaml:"rate"`   // 100mbit, 1gbit, 500kbit
	Delay     string     `yaml:"delay"`  // one way: 10ms
	Jitter    string     `yaml:"jitter"` // ±: 5ms
	Loss      string     `yaml:"loss"`   // 2%
	BurstLoss *BurstLoss `yaml:"burst_loss"`
	Queue     string     `yaml:"queue"` // longest wait for the rate: 50ms
	Reorder   bool       `yaml:"reorder"`
	// Schedule makes the link vary: each step, its after elapsed since the
	// previous one (the first: since the emulator's start), sets the rate,
	// delay and loss it names; what it does not name is the shape's own.
	// The shape's own values hold before the first step; then the steps
	// cycle (the first again its after past the last), unless repeat is
	// false, when the last step stays.
	Schedule []Step `yaml:"schedule"`
	Repeat   *bool  `yaml:"repeat"` // the schedule cycles; default true
	// Trace replays profiles/traces/NAME.trace (mahimahi's format) in
	// place of the rate.
	Trace string `yaml:"trace"`
}

// Step is one change of a scheduled link.
type Step struct {
	After string `yaml:"after"` // since the previous step: 15s
	Rate  string `yaml:"rate"`
	Delay string `yaml:"delay"`
	Loss  string `yaml:"loss"`
}

// BurstLoss is Gilbert-Elliott loss, in percent.
type BurstLoss struct {
	P        float64 `yaml:"p"`         // % chance good → bad per packet
	R        float64 `yaml:"r"`         // % chance bad → good per packet
	LossGood float64 `yaml:"loss_good"` // % lost in the good state
	LossBad  float64 `yaml:"loss_bad"`  // % lost in the bad state
}

// Profiles lists the built-in profile names.
func Profiles() []string {
	ents, _ := profileFS.ReadDir("profiles")
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".yaml"); ok && !e.IsDir() {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// LoadProfile returns a built-in profile by name.
func LoadProfile(name string) (*Profile, error) {
	b, err := profileFS.ReadFile(path.Join("profiles", name+".yaml"))
	if err != nil {
		return nil, fmt.Errorf("no profile %q (have: %s)", name, strings.Join(Profiles(), ", "))
	}
	return ParseProfile(name, b)
}

// ParseProfile parses and checks a profile; errors name the field.
func ParseProfile(name string, b []byte) (*Profile, error) {
	p := &Profile{Name: name}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("profile %s: %w", name, err)
	}
	if len(p.Links) == 0 {
		return nil, fmt.Errorf("profile %s: links: at least one link is needed", name)
	}
	for i := range p.Links {
		if p.Links[i].Name == "" {
			p.Links[i].Name = fmt.Sprintf("link%d", i+1)
		}
		if _, err := p.Links[i].Params(); err != nil {
			return nil, fmt.Errorf("profile %s: links[%d].%w", name, i, err)
		}
	}
	return p, nil
}

// ParseLinks reads the ad hoc form "100mbit/10ms,50mbit/40ms/1%": per link
// rate/delay, then optionally a loss ("1%") and a jitter ("±5ms" or "j5ms").
func ParseLinks(spec string) (*Profile, error) {
	p := &Profile{Name: "links:" + spec}
	for i, l := range strings.Split(spec, ",") {
		parts := strings.Split(strings.TrimSpace(l), "/")
		if len(parts) < 2 {
			return nil, fmt.Errorf("--links: link %d %q: want rate/delay[/loss%%][/±jitter]", i+1, l)
		}
		s := LinkSpec{Name: fmt.Sprintf("link%d", i+1), Shape: Shape{Rate: parts[0], Delay: parts[1]}}
		for _, x := range parts[2:] {
			switch {
			case strings.HasSuffix(x, "%"):
				s.Loss = x
			case strings.HasPrefix(x, "±"), strings.HasPrefix(x, "j"):
				s.Jitter = strings.TrimPrefix(strings.TrimPrefix(x, "±"), "j")
			default:
				return nil, fmt.Errorf("--links: link %d: %q is neither a loss (1%%) nor a jitter (±5ms)", i+1, x)
			}
		}
		if _, err := s.Params(); err != nil {
			return nil, fmt.Errorf("--links: link %d: %w", i+1, err)
		}
		p.Links = append(p.Links, s)
	}
	return p, nil
}

// Params returns the emulator parameters for A→B and B→A.
func (l LinkSpec) Params() ([2]emulator.Params, error) {
	var out [2]emulator.Params
	for i, over := range []*Shape{l.AToB, l.BToA} {
		s := l.Shape
		if over != nil {
			s = s.merge(*over)
		}
		p, err := s.params()
		if err != nil {
			return out, err
		}
		out[i] = p
	}
	return out, nil
}

// RateMbit is the A→B rate in Mbit/s (0: unlimited); a scheduled or
// traced link's mean rate.
func (l LinkSpec) RateMbit() float64 {
	p, _ := l.Params()
	return p[0].MeanRateBps() / 1e6
}

func (s Shape) merge(o Shape) Shape {
	// A direction's rate replaces the link's trace, and its trace the rate.
	if o.Rate != "" {
		s.Trace = ""
	}
	if o.Trace != "" {
		s.Trace, s.Rate = o.Trace, ""
	}
	if o.Schedule != nil {
		s.Schedule = o.Schedule
	}
	if o.Repeat != nil {
		s.Repeat = o.Repeat
	}
	for _, f := range []struct{ dst, src *string }{{&s.Rate, &o.Rate}, {&s.Delay, &o.Delay}, {&s.Jitter, &o.Jitter}, {&s.Loss, &o.Loss}, {&s.Queue, &o.Queue}} {
		if *f.src != "" {
			*f.dst = *f.src
		}
	}
	if o.BurstLoss != nil {
		s.BurstLoss = o.BurstLoss
	}
	s.Reorder = s.Reorder || o.Reorder
	return s
}

func (s Shape) params() (emulator.Params, error) {
	var p emulator.Params
	var err error
	if s.Rate != "" {
		if p.RateBps, err = ParseRate(s.Rate); err != nil {
			return p, fmt.Errorf("rate: %w", err)
		}
	}
	for _, f := range []struct {
		name string
		s    string
		d    *time.Duration
	}{{"delay", s.Delay, &p.Delay}, {"jitter", s.Jitter, &p.Jitter}, {"queue", s.Queue, &p.Queue}} {
		if f.s == "" {
			continue
		}
		if *f.d, err = time.ParseDuration(f.s); err != nil || *f.d < 0 {
			return p, fmt.Errorf("%s: %q is not a duration (like 10ms)", f.name, f.s)
		}
	}
	if s.Loss != "" {
		if p.Loss, err = parsePercent(s.Loss); err != nil {
			return p, fmt.Errorf("loss: %w", err)
		}
	}
	if b := s.BurstLoss; b != nil {
		for _, v := range []float64{b.P, b.R, b.LossGood, b.LossBad} {
			if v < 0 || v > 100 {
				return p, fmt.Errorf("burst_loss: %v is not a percentage 0..100", v)
			}
		}
		p.GE = &emulator.GilbertElliott{P: b.P / 100, R: b.R / 100, LossGood: b.LossGood / 100, LossBad: b.LossBad / 100}
	}
	p.Reorder = s.Reorder
	if s.Trace != "" {
		if s.Rate != "" {
			return p, fmt.Errorf("trace: a trace replaces the rate: set rate or trace, not both")
		}
		tr, err := loadTrace(s.Trace)
		if err != nil {
			return p, fmt.Errorf("trace: %w", err)
		}
		// A Trace of its own for each direction, sharing the timestamps:
		// the two directions' Params then differ, as a --direct run
		// (which has only TBF rates) checks.
		p.Trace = &emulator.Trace{Name: tr.Name, Ms: tr.Ms}
		p.RateBps = tr.MeanBps() // describes the link; the trace shapes it
	}
	if s.Repeat != nil && len(s.Schedule) == 0 {
		return p, fmt.Errorf("repeat: there is no schedule to repeat")
	}
	if len(s.Schedule) > 0 {
		sc := &emulator.Schedule{Repeat: s.Repeat == nil || *s.Repeat}
		for i, st := range s.Schedule {
			e := emulator.Step{RateBps: p.RateBps, Delay: p.Delay, Loss: p.Loss}
			field := func(f string) string { return fmt.Sprintf("schedule[%d].%s", i, f) }
			if st.After == "" {
				return p, fmt.Errorf("%s: each step needs one (like 15s)", field("after"))
			}
			if e.After, err = time.ParseDuration(st.After); err != nil || e.After <= 0 {
				return p, fmt.Errorf("%s: %q is not a duration > 0 (like 15s)", field("after"), st.After)
			}
			if st.Rate != "" {
				if p.Trace != nil {
					return p, fmt.Errorf("%s: a traced link's rate is its trace's", field("rate"))
				}
				if e.RateBps, err = ParseRate(st.Rate); err != nil {
					return p, fmt.Errorf("%s: %w", field("rate"), err)
				}
			}
			if st.Delay != "" {
				if e.Delay, err = time.ParseDuration(st.Delay); err != nil || e.Delay < 0 {
					return p, fmt.Errorf("%s: %q is not a duration (like 10ms)", field("delay"), st.Delay)
				}
			}
			if st.Loss != "" {
				if e.Loss, err = parsePercent(st.Loss); err != nil {
					return p, fmt.Errorf("%s: %w", field("loss"), err)
				}
			}
			sc.Steps = append(sc.Steps, e)
		}
		p.Schedule = sc
	}
	return p, nil
}

func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(s, "%"), 64)
	if err != nil || !strings.HasSuffix(s, "%") || v < 0 || v > 100 {
		return 0, fmt.Errorf("%q is not a percentage (like 2%%)", s)
	}
	return v / 100, nil
}

var traces = struct {
	sync.Mutex
	m map[string]*emulator.Trace
}{m: map[string]*emulator.Trace{}}

// loadTrace reads a built-in trace once.
func loadTrace(name string) (*emulator.Trace, error) {
	traces.Lock()
	defer traces.Unlock()
	if t := traces.m[name]; t != nil {
		return t, nil
	}
	b, err := profileFS.ReadFile(path.Join("profiles", "traces", name+".trace"))
	if err != nil || strings.ContainsAny(name, "/\\") {
		return nil, fmt.Errorf("no trace %q (have: %s)", name, strings.Join(Traces(), ", "))
	}
	t, err := emulator.ParseTrace(name, b)
	if err != nil {
		return nil, err
	}
	traces.m[name] = t
	return t, nil
}

// Traces lists the built-in trace names.
func Traces() []string {
	ents, _ := profileFS.ReadDir("profiles/traces")
	var out []string
	for _, e := range ents {
		if name, ok := strings.CutSuffix(e.Name(), ".trace"); ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// ParseRate reads a rate in tc's units: bit, kbit, mbit, gbit; or
// "unlimited" (0).
func ParseRate(s string) (float64, error) {
	ls := strings.ToLower(strings.TrimSpace(s))
	if ls == "unlimited" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(ls, u.suffix) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(ls, u.suffix), 64)
			if err != nil || v <= 0 {
				break
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("%q is not a rate (like 100mbit, 1gbit, 500kbit, unlimited)", s)
}
