package netns

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// ShapeTBF puts `tbf rate R burst B latency L` on an interface of a
// namespace (R in bit/s, burst in bytes), as tc would.
func ShapeTBF(ns *Namespace, dev string, rateBits uint64, burstBytes uint32, latencySec float64) error {
	l, err := ns.NL.LinkByName(dev)
	if err != nil {
		return err
	}
	rate := rateBits / 8 // bytes/s, what the kernel's tbf wants
	limit := uint32(float64(rate)*latencySec) + burstBytes
	q := &netlink.Tbf{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(1, 0), Parent: netlink.HANDLE_ROOT},
		Rate:       rate, Limit: limit, Buffer: netlink.Xmittime(rate, burstBytes),
	}
	if err := ns.NL.QdiscReplace(q); err != nil {
		return fmt.Errorf("%s/%s: tbf rate %d: %w", ns.Name, dev, rateBits, err)
	}
	return nil
}
