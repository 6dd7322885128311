package netns

import "fmt"

// The two-site plan: site A and site B are joined by n uplinks; uplink i is
// interface ul<i> on both sites, 10.100.i.1/30 on A and 10.100.i.2/30 on B.
// Sites joins them by bare veths; the emulator's WAN topology puts a WAN
// namespace between them with the same names and addresses.

// UplinkName is the interface name of uplink i on both sites.
func UplinkName(i int) string { return fmt.Sprintf("ul%d", i) }

// UplinkAddr is the address of uplink i on a side (1 = A, 2 = B).
func UplinkAddr(i, side int) string { return fmt.Sprintf("10.100.%d.%d", i, side) }

// UplinkAddr6 is the IPv6 address of uplink i on a side (1 = A, 2 = B).
func UplinkAddr6(i, side int) string { return fmt.Sprintf("fd00:100:%d::%d", i, side) }

// Sites is site A and site B joined by n veth uplinks, each with an IPv4
// and an IPv6 address on both ends.
func Sites(n int) Topology {
	t := Topology{Namespaces: []string{"a", "b"}}
	for i := 0; i < n; i++ {
		t.Links = append(t.Links, Link{
			A: End{NS: "a", Name: UplinkName(i), Addr: UplinkAddr(i, 1) + "/30", Addr6: UplinkAddr6(i, 1) + "/64"},
			B: End{NS: "b", Name: UplinkName(i), Addr: UplinkAddr(i, 2) + "/30", Addr6: UplinkAddr6(i, 2) + "/64"},
		})
	}
	return t
}

// UplinkTxBytes reads the bytes site A's first links uplink veths have
// transmitted so far.
func UplinkTxBytes(n *Net, links int) []uint64 {
	v := make([]uint64, links)
	for i := range v {
		if l, err := n.NS("a").NL.LinkByName(UplinkName(i)); err == nil && l.Attrs().Statistics != nil {
			v[i] = l.Attrs().Statistics.TxBytes
		}
	}
	return v
}
