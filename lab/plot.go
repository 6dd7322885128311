package lab

import (
	"fmt"
	"html"
	"io"
	"strings"
)

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteSVG draws the report: goodput over time per method (top), and the
// share of A→B bytes each uplink carried per method (bottom).
func WriteSVG(w io.Writer, r *Report) error {
	const W, H1, left, right, top = 960, 320, 130, 190, 40
	rows := len(r.Results)
	H2 := 30 + 22*rows
	H := top + H1 + 60 + H2 + 30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">tunbond lab bond — profile %s, %s</text>`+"\n", left, html.EscapeString(r.Profile), linksLabel(r.Links))

	// Goodput over time.
	maxY, maxT := 1.0, 1
	for _, res := range r.Results {
		for _, v := range res.PerSecond {
			maxY = max(maxY, v)
		}
		maxT = max(maxT, len(res.PerSecond))
	}
	maxY *= 1.1
	pw := W - left - right
	x := func(t float64) float64 { return left + t/float64(maxT)*float64(pw) }
	y := func(v float64) float64 { return top + H1 - v/maxY*H1 }
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top+H1, W-right, top+H1)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, top+H1)
	for i := 0; i <= 4; i++ {
		v := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f</text><line x1="%d" x2="%d" y1="%.0f" y2="%.0f" stroke="#ddd"/>`+"\n",
			left-6, y(v)+4, v, left, W-right, y(v), y(v))
	}
	for t := 0; t <= maxT; t += max(1, maxT/10) {
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%d</text>`+"\n", x(float64(t)), top+H1+16, t)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">seconds</text>`+"\n", left+pw/2, top+H1+32)
	fmt.Fprintf(&b, `<text x="76" y="%d" transform="rotate(-90 76 %d)" text-anchor="middle">goodput Mbit/s</text>`+"\n", top+H1/2, top+H1/2)
	for k, res := range r.Results {
		c := palette[k%len(palette)]
		var pts []string
		for t, v := range res.PerSecond {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(float64(t)+0.5), y(v)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		ly := top + 10 + 18*k
		value := fmt.Sprintf("%.1f", res.GoodputMbps)
		if res.Skipped != "" || res.Error != "" {
			value = "not measured" // no 0.0 for a row that has no number
		}
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="4" fill="%s"/><text x="%d" y="%d">%s %s</text>`+"\n",
			W-right+12, ly-4, c, W-right+32, ly+2, html.EscapeString(res.Method), value)
	}

	// Uplink shares.
	by := top + H1 + 60
	fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="13">share of A→B bytes per uplink</text>`+"\n", left, by)
	for k, res := range r.Results {
		yy := by + 12 + 22*k
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", left-6, yy+13, html.EscapeString(res.Method))
		x0 := float64(left)
		for i, s := range res.LinkShare {
			wpx := s * float64(pw)
			fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="16" fill="%s" opacity="0.8"/>`+"\n", x0, yy, wpx, palette[(i+5)%len(palette)])
			if s > 0.06 {
				fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="white">%.0f%%</text>`+"\n", x0+4, yy+12, 100*s)
			}
			x0 += wpx
		}
	}
	for i, l := range r.Links {
		ly := by + 12 + 18*i
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="10" fill="%s" opacity="0.8"/><text x="%d" y="%d">%s</text>`+"\n",
			W-right+12, ly, palette[(i+5)%len(palette)], W-right+32, ly+9, html.EscapeString(l.Name))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func linksLabel(links []LinkReport) string {
	var parts []string
	for _, l := range links {
		s := fmt.Sprintf("%s %g Mbit/s %g ms", l.Name, l.RateMbit, l.DelayMs)
		if l.JitterMs > 0 {
			s += fmt.Sprintf(" ±%g", l.JitterMs)
		}
		if l.LossPct > 0 {
			s += fmt.Sprintf(" %g%% loss", l.LossPct)
		}
		parts = append(parts, s)
	}
	return html.EscapeString(strings.Join(parts, " · "))
}
