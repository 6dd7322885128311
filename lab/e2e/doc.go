// Package e2e holds the namespace end-to-end tests of the roles: a bond
// between two sites, the director with its real servers, their routing,
// control sockets and captures on the wire, each over lab topologies. It
// has no code of its own beyond its tests.
package e2e
