package netns_test

import (
	"net"
	"testing"

	"github.com/tunbond/tunbond/lab/labtest"
	"github.com/tunbond/tunbond/lab/netns"
)

// TestSitesBuildAndClose builds the two-site plan: each uplink has its
// addresses and carries a TCP connection, a link set down is down, TBF
// goes on, a live run's namespaces survive CleanStale, and Close leaves
// nothing.
func TestSitesBuildAndClose(t *testing.T) {
	labtest.RequireRoot(t)
	id := labtest.NewID(t)
	n, err := netns.Sites(2).Build(id)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if left, err := netns.Leftovers(id); err != nil || len(left) != 2 {
		t.Fatalf("namespaces of the run: %v (%v), want tb-%s-a and -b", left, err, id)
	}
	for i := 0; i < 2; i++ {
		var ln net.Listener
		if err := n.NS("b").Do(func() (err error) { ln, err = net.Listen("tcp4", netns.UplinkAddr(i, 2)+":0"); return }); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		if err := n.NS("a").Do(func() (err error) { c, err = net.Dial("tcp4", ln.Addr().String()); return }); err != nil {
			t.Fatalf("uplink %d: %v", i, err)
		}
		c.Close()
		ln.Close()
	}
	if err := netns.ShapeTBF(n.NS("a"), netns.UplinkName(0), 10e6, 4000, 0.05); err != nil {
		t.Fatal(err)
	}
	if err := n.SetLinkUp("a", netns.UplinkName(1), false); err != nil {
		t.Fatal(err)
	}
	if l, err := n.NS("a").NL.LinkByName(netns.UplinkName(1)); err != nil || l.Attrs().Flags&net.FlagUp != 0 {
		t.Fatalf("ul1 after SetLinkUp(false): %v", err)
	}
	if _, err := netns.CleanStale(); err != nil {
		t.Fatal(err)
	}
	if left, _ := netns.Leftovers(id); len(left) != 2 {
		t.Fatalf("CleanStale removed a live run's namespaces: %v left", left)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := netns.Leftovers(id); len(left) != 0 {
		t.Fatalf("left after Close: %v", left)
	}
}
