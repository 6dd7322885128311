package host

import (
	"fmt"

	"github.com/vishvananda/netlink"
)

// Host is the network namespace an endpoint runs in: a netlink handle for
// links, addresses, routes and rules there, and Do, which runs a function on
// a thread inside it (sockets and TUN devices belong to the namespace of the
// thread that creates them). The lab builds Hosts for its namespaces; the
// command uses CurrentHost.
type Host struct {
	NL *netlink.Handle
	Do func(f func() error) error
}

// CurrentHost is the namespace tunbond was started in.
func CurrentHost() (*Host, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Host{NL: h, Do: func(f func() error) error { return f() }}, nil
}
