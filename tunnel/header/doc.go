// Package header holds typed byte-slice views of the headers tunbond reads
// and writes (IPv4, IPv6, TCP, UDP, ICMP, GRE, Ethernet, the tunbond control
// message), builders that write them in place, and the flow parsers that
// read a packet's 5-tuple. It does no I/O and imports nothing of tunbond, in
// the manner of gVisor's tcpip/header: a view is a []byte with accessors,
// valid once its Validate has returned nil.
package header
