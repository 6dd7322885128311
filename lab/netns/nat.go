package netns

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"

	"github.com/vishvananda/netlink"
)

// The NAT plan: like Sites, but uplink i of natted goes through a NAT
// namespace "nat<i>": site A's ul<i> (10.100.i.1/30) ↔ the NAT's lan
// (10.100.i.2/30); the NAT's wan (10.200.i.1/30) ↔ site B's ul<i>
// (10.200.i.2/30). The NAT masquerades what A sends out of wan, with
// random ports (nftables), as a carrier-grade NAT would: B sees A's
// packets come from 10.200.i.1 and a port it cannot know beforehand.

// NATName is the namespace of uplink i's NAT.
func NATName(i int) string { return fmt.Sprintf("nat%d", i) }

// NATGateway is the NAT's address on site A's side of uplink i: A's
// gateway to B.
func NATGateway(i int) string { return fmt.Sprintf("10.100.%d.2", i) }

// NATPublic is the NAT's address on B's side of uplink i (the source B
// sees), NATSiteB site B's address there.
func NATPublic(i int) string { return fmt.Sprintf("10.200.%d.1", i) }
func NATSiteB(i int) string  { return fmt.Sprintf("10.200.%d.2", i) }

// NATSites is Sites(n) with the uplinks in natted going through a NAT.
func NATSites(n int, natted ...int) Topology {
	behind := map[int]bool{}
	for _, i := range natted {
		behind[i] = true
	}
	t := Topology{Namespaces: []string{"a", "b"}}
	for i := 0; i < n; i++ {
		if !behind[i] {
			t.Links = append(t.Links, Link{
				A: End{NS: "a", Name: UplinkName(i), Addr: UplinkAddr(i, 1) + "/30"},
				B: End{NS: "b", Name: UplinkName(i), Addr: UplinkAddr(i, 2) + "/30"},
			})
			continue
		}
		nat := NATName(i)
		t.Namespaces = append(t.Namespaces, nat)
		t.Links = append(t.Links,
			Link{A: End{NS: "a", Name: UplinkName(i), Addr: UplinkAddr(i, 1) + "/30"},
				B: End{NS: nat, Name: "lan", Addr: NATGateway(i) + "/30"}},
			Link{A: End{NS: nat, Name: "wan", Addr: NATPublic(i) + "/30"},
				B: End{NS: "b", Name: UplinkName(i), Addr: NATSiteB(i) + "/30"}})
	}
	return t
}

// natRules masquerade what leaves wan, with random source ports.
const natRules = `table ip tunbond_lab_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan" masquerade random
	}
}
`

// StartNAT turns uplink i's NAT namespace into a NAT: forwarding on,
// nftables masquerade on wan. The namespace's deletion undoes both.
func (n *Net) StartNAT(i int) error {
	ns := n.NS(NATName(i))
	if ns == nil {
		return fmt.Errorf("no NAT on uplink %d", i)
	}
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		return fmt.Errorf("%s: forwarding: %w", ns.Name, err)
	}
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = bytes.NewBufferString(natRules)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := ns.Start(cmd); err != nil {
		return fmt.Errorf("%s: nft: %w", ns.Name, err)
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("%s: nft: %w: %s", ns.Name, err, out.String())
	}
	return nil
}

// FlushNAT forgets uplink i's NAT mappings (its conntrack table), as a
// NAT that reboots or times a mapping out: A's next packet gets a new
// public port.
func (n *Net) FlushNAT(i int) error {
	ns := n.NS(NATName(i))
	if ns == nil {
		return fmt.Errorf("no NAT on uplink %d", i)
	}
	return ns.NL.ConntrackTableFlush(netlink.ConntrackTable)
}
