// Package session holds the pure parts of tunbond's authenticated sessions
// (issue 9, docs/wire-format.md "Sealed packets"): the configured key and
// its file, the replay window, sealing and opening packets in place, and
// the handshake that agrees a session's keys. It does no I/O on the
// network and keeps no timers: the caller hands it packets, a clock and
// randomness, and sends what it returns.
//
//   - key.go: the 32-byte configured key (base64, one line) and its file's
//     permissions.
//   - replay.go: the 2048-packet sliding replay window (RFC 6479).
//   - session.go: a session's keys per direction, Seal and Open in place.
//   - table.go: the sessions a receiver knows by index (current, next,
//     previous) and the promotion of a responder's session.
//   - handshake.go: the handshake state machine (control types 5 and 6).
//   - errors.go: why a packet is dropped, one counter per reason.
package session
