// Package lab measures tunbond against the alternatives: the link profiles,
// the bond and director benches over namespaces (lab/netns) with emulated
// links (lab/emulator) and traffic (lab/traffic), their report and plot.
package lab
