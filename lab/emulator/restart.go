package emulator

import "time"

// Restart sets the direction's schedule and trace back to their start, now,
// keeping its params and the frames it holds.
func (d *Direction) Restart() {
	d.mu.Lock()
	d.shaper.Restart(time.Now())
	d.mu.Unlock()
}

// Restart sets both directions' schedules and traces back to their start
// at the same instant.
func (w *Wire) Restart() {
	now := time.Now()
	for _, d := range []*Direction{w.AB, w.BA} {
		d.mu.Lock()
		d.shaper.Restart(now)
		d.mu.Unlock()
	}
}

// Restart sets every wire's schedules and traces back to their start, so
// runs one after another (a bench's methods) each meet the links from the
// same point of their schedules.
func (e *WAN) Restart() {
	for _, w := range e.Wires {
		w.Restart()
	}
}
