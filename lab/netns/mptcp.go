package netns

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// MPTCP path manager over generic netlink (what `ip mptcp` does), from
// include/uapi/linux/mptcp.h.
const (
	mptcpPMCmdAddAddr   = 1
	mptcpPMCmdSetLimits = 5
	mptcpPMAttrAddr     = 1
	mptcpPMAttrRcvAdd   = 2
	mptcpPMAttrSubflows = 3
	mptcpAddrFamily     = 1
	mptcpAddrAddr4      = 3
	mptcpAddrFlags      = 6
	mptcpAddrIfIdx      = 7
	mptcpFlagSubflow    = 1 << 1
)

// MPTCPAvailable reports whether the namespace's kernel has MPTCP enabled.
func MPTCPAvailable(ns *Namespace) bool {
	ok := false
	_ = ns.Do(func() error {
		b, err := os.ReadFile("/proc/sys/net/mptcp/enabled")
		ok = err == nil && len(b) > 0 && b[0] == '1'
		return nil
	})
	return ok
}

// mptcpRequest sends one path-manager command in the namespace.
func mptcpRequest(ns *Namespace, cmd uint8, attrs ...*nl.RtAttr) error {
	return ns.Do(func() error {
		fam, err := netlink.GenlFamilyGet("mptcp_pm")
		if err != nil {
			return fmt.Errorf("mptcp path manager: %w", err)
		}
		req := nl.NewNetlinkRequest(int(fam.ID), unix.NLM_F_ACK)
		req.AddData(&nl.Genlmsg{Command: cmd, Version: uint8(fam.Version)})
		for _, a := range attrs {
			req.AddData(a)
		}
		_, err = req.Execute(unix.NETLINK_GENERIC, 0)
		return err
	})
}

// MPTCPLimits sets how many subflows and announced addresses a connection may use.
func MPTCPLimits(ns *Namespace, subflows, addAddrAccepted uint32) error {
	if err := mptcpRequest(ns, mptcpPMCmdSetLimits,
		nl.NewRtAttr(mptcpPMAttrSubflows, nl.Uint32Attr(subflows)),
		nl.NewRtAttr(mptcpPMAttrRcvAdd, nl.Uint32Attr(addAddrAccepted))); err != nil {
		return fmt.Errorf("%s: mptcp limits: %w", ns.Name, err)
	}
	return nil
}

// MPTCPSubflowEndpoint makes connections open an extra subflow from addr
// out of dev (`ip mptcp endpoint add ADDR dev DEV subflow`).
func MPTCPSubflowEndpoint(ns *Namespace, addr, dev string) error {
	l, err := ns.NL.LinkByName(dev)
	if err != nil {
		return err
	}
	a := nl.NewRtAttr(mptcpPMAttrAddr|unix.NLA_F_NESTED, nil)
	a.AddRtAttr(mptcpAddrFamily, nl.Uint16Attr(unix.AF_INET))
	a.AddRtAttr(mptcpAddrAddr4, net.ParseIP(addr).To4())
	a.AddRtAttr(mptcpAddrFlags, nl.Uint32Attr(mptcpFlagSubflow))
	a.AddRtAttr(mptcpAddrIfIdx, nl.Uint32Attr(uint32(l.Attrs().Index)))
	if err := mptcpRequest(ns, mptcpPMCmdAddAddr, a); err != nil {
		return fmt.Errorf("%s: mptcp endpoint %s dev %s: %w", ns.Name, addr, dev, err)
	}
	return nil
}

// SetupMPTCP lets site A of a two-site topology (Sites, or the emulator's
// WAN) open one subflow per extra uplink, from that uplink's address, with a
// source rule and table per uplink so each subflow leaves by its own uplink;
// site B only needs its limits.
func SetupMPTCP(n *Net, links int) error {
	a, b := n.NS("a"), n.NS("b")
	if !MPTCPAvailable(a) {
		return errors.New("the kernel has no MPTCP (net.mptcp.enabled)")
	}
	extra := uint32(max(links-1, 1))
	for _, ns := range []*Namespace{a, b} {
		if err := MPTCPLimits(ns, extra, extra); err != nil {
			return err
		}
	}
	for i := 1; i < links; i++ {
		table := 200 + i
		l, err := a.NL.LinkByName(UplinkName(i))
		if err != nil {
			return err
		}
		if err := a.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP(UplinkAddr(i, 2)), Table: table}); err != nil {
			return fmt.Errorf("mptcp: table %d: %w", table, err)
		}
		rule := netlink.NewRule()
		rule.Src = &net.IPNet{IP: net.ParseIP(UplinkAddr(i, 1)).To4(), Mask: net.CIDRMask(32, 32)}
		rule.Table = table
		rule.Priority = 7800
		if err := a.NL.RuleAdd(rule); err != nil {
			return fmt.Errorf("mptcp: rule: %w", err)
		}
		if err := MPTCPSubflowEndpoint(a, UplinkAddr(i, 1), UplinkName(i)); err != nil {
			return err
		}
	}
	return nil
}
