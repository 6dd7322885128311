package lab

import "github.com/tunbond/tunbond/lab/emulator"

// Unshaped reports whether no link of the profile has a rate, delay,
// jitter, loss or anything else to emulate in either direction (the
// "unshaped" profile, or --links "unlimited/0ms,..."). Such a run joins the
// sites with plain veths (BenchConfig.Direct): the emulator would only add
// its own forwarding.
func (p *Profile) Unshaped() bool {
	for _, l := range p.Links {
		pp, err := l.Params()
		if err != nil || pp[0] != (emulator.Params{}) || pp[1] != (emulator.Params{}) {
			return false
		}
	}
	return len(p.Links) > 0
}
