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

// The LAN plan (mode l2): each site has a bridge br0 with a port lan0, a
// veth to a LAN host namespace ("ha" behind site A, "hb" behind site B)
// whose eth0 is LANAddr(side)/24: one subnet across the two sites, which
// the bond joins once its TAP is on br0.

// LANBridge is each site's bridge; LANHost the namespace of a side's host.
const LANBridge = "br0"

func LANHost(side int) string { return map[int]string{1: "ha", 2: "hb"}[side] }
func LANAddr(side int) string { return fmt.Sprintf("10.50.0.%d", side) }
func siteNS(side int) string  { return map[int]string{1: "a", 2: "b"}[side] }

// WithLANs adds to t (two sites "a" and "b") a LAN host behind each site,
// on the site's bridge br0.
func WithLANs(t Topology) Topology {
	for side := 1; side <= 2; side++ {
		host := LANHost(side)
		t.Namespaces = append(t.Namespaces, host)
		t.Links = append(t.Links, Link{A: End{NS: siteNS(side), Name: "lan0"}, B: End{NS: host, Name: "eth0", Addr: LANAddr(side) + "/24"}})
		t.Bridges = append(t.Bridges, Bridge{NS: siteNS(side), Name: LANBridge, Ports: []string{"lan0"}})
	}
	return t
}

// SetLANMTU sets the MTU of both LAN hosts' interfaces (mode l2: the TAP's
// MTU, so the hosts send no frame the bond cannot carry).
func SetLANMTU(n *Net, mtu int) error {
	for side := 1; side <= 2; side++ {
		ns := n.NS(LANHost(side))
		if ns == nil {
			return fmt.Errorf("no LAN host %s", LANHost(side))
		}
		l, err := ns.NL.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := ns.NL.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("%s: eth0 mtu %d: %w", ns.Name, mtu, err)
		}
	}
	return nil
}
