// Package conn holds the transports that carry tunnel packets over one
// uplink, batch-shaped like wireguard-go's conn.Bind: raw IP sockets
// (protocols 47, 4 and 41; IPv4 or IPv6) and UDP sockets (GRE-in-UDP, RFC
// 8086, with UDP GSO and GRO where the kernel has them), pinned to the
// uplink's address and device. A transport adds and strips nothing but the
// outer IP (and UDP) header; the encapsulation (tunnel/encap) is the
// caller's. conntest has a fake.
package conn

import "net/netip"

// Uplink carries tunnel packets over one uplink to one remote endpoint, in
// batches, like wireguard-go's conn.Bind.
type Uplink interface {
	// Send sends each packet (tunnel header and payload; the outer IP
	// header, and UDP's, are added by the transport) to the remote. It returns how many
	// were sent; on error the rest of the batch is dropped.
	Send(pkts [][]byte) (int, error)
	// Receivers returns one function per underlying socket; each reads up
	// to len(bufs) packets, packet i being bufs[i][:sizes[i]]: with its
	// outer IPv4 header from a raw IPv4 socket, from the tunnel header on
	// from a raw IPv6 or a UDP one (the kernel strips those outer headers).
	// A size of 0 marks a packet that did not fit its buffer.
	Receivers() []ReceiveFunc
	// BatchSize is the largest batch worth passing to Send or a ReceiveFunc.
	BatchSize() int
	// Close stops the uplink; blocked receivers return an error.
	Close() error
}

// ReceiveFunc reads a batch of packets. A transport whose packets come
// without their outer header (UDP, raw IPv6) sets from[i] to packet i's
// sender when from is not nil; a raw IPv4 one leaves from alone: the outer
// header names the sender.
type ReceiveFunc func(bufs [][]byte, sizes []int, from []netip.AddrPort) (int, error)
