package emulator

import (
	"fmt"

	"github.com/tunbond/tunbond/lab/netns"
)

// WANTopology is site A and site B joined through a WAN namespace by n
// uplinks. Uplink i is A's ul<i> (10.100.i.1/30) ↔ wan's a<i>, and wan's b<i>
// ↔ B's ul<i> (10.100.i.2/30): the WAN side carries frames between a<i> and
// b<i> with the link emulator, so the sites see one /30 wire per uplink.
func WANTopology(n int) netns.Topology {
	t := netns.Topology{Namespaces: []string{"a", "wan", "b"}}
	for i := 0; i < n; i++ {
		t.Links = append(t.Links,
			netns.Link{A: netns.End{NS: "a", Name: netns.UplinkName(i), Addr: netns.UplinkAddr(i, 1) + "/30"}, B: netns.End{NS: "wan", Name: fmt.Sprintf("a%d", i)}},
			netns.Link{A: netns.End{NS: "wan", Name: fmt.Sprintf("b%d", i)}, B: netns.End{NS: "b", Name: netns.UplinkName(i), Addr: netns.UplinkAddr(i, 2) + "/30"}},
		)
	}
	return t
}

// WAN is the running wires of a WAN topology.
type WAN struct {
	Wires []*Wire
}

// StartWAN turns every interface of the uplinks' path to plain
// frames (offloads off) and starts one emulated wire per uplink, with
// params[i][0] for A→B and params[i][1] for B→A.
func StartWAN(n *netns.Net, params [][2]Params) (*WAN, error) {
	e := &WAN{}
	for i, p := range params {
		for _, x := range []struct{ ns, dev string }{{"a", netns.UplinkName(i)}, {"b", netns.UplinkName(i)},
			{"wan", fmt.Sprintf("a%d", i)}, {"wan", fmt.Sprintf("b%d", i)}} {
			dev := x.dev
			if err := n.NS(x.ns).Do(func() error { return DisableOffloads(dev) }); err != nil {
				e.Close()
				return nil, err
			}
		}
		w, err := StartWire(n.NS("wan").Do, fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i), p[0], p[1], uint64(i+1)*1000)
		if err != nil {
			e.Close()
			return nil, err
		}
		e.Wires = append(e.Wires, w)
	}
	return e, nil
}

// Close stops the wires.
func (e *WAN) Close() error {
	for _, w := range e.Wires {
		w.Close()
	}
	e.Wires = nil
	return nil
}

// BytesAB reads the A→B bytes each wire has carried so far.
func (e *WAN) BytesAB() []uint64 {
	v := make([]uint64, len(e.Wires))
	for i, w := range e.Wires {
		v[i] = w.AB.Stats.Bytes.Load()
	}
	return v
}
