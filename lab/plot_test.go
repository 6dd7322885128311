package lab

import (
	"strings"
	"testing"
)

func TestWriteSVGLabelsRows(t *testing.T) {
	r := &Report{Profile: "symmetric", Links: []LinkReport{{Name: "link1", RateMbit: 100, DelayMs: 10}, {Name: "link2", RateMbit: 100, DelayMs: 10}},
		Results: []BenchResult{
			{Method: "tunbond-wrr", GoodputMbps: 182.6, PerSecond: []float64{180, 183}, LinkShare: []float64{0.5, 0.5}},
			{Method: "mptcp", Skipped: "mptcpize is not installed"},
			{Method: "ecmp", Error: "no route"},
		}}
	var b strings.Builder
	if err := WriteSVG(&b, r); err != nil {
		t.Fatal(err)
	}
	svg := b.String()
	if !strings.HasPrefix(svg, "<svg") || !strings.HasSuffix(svg, "</svg>\n") {
		t.Fatal("not a whole SVG document")
	}
	for _, want := range []string{"tunbond-wrr 182.6", "mptcp not measured", "ecmp not measured", "link1 100 Mbit/s 10 ms"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the plot lacks %q", want)
		}
	}
	if strings.Contains(svg, "mptcp 0.0") {
		t.Error("a skipped row is plotted as 0.0")
	}
}
