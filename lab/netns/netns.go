// Package netns builds the lab's network namespaces and the topologies
// between them: veth links, addresses, routes, a TBF shaper, the MPTCP
// path manager, and the two-site uplink plan every bench and test shares.
package netns

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	"github.com/tunbond/tunbond/endpoints/host"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Namespace is a named network namespace created by the lab.
type Namespace struct {
	Name string
	h    vnetns.NsHandle
	NL   *netlink.Handle
}

// New creates the named namespace (visible to `ip netns`) with lo up.
func New(name string) (*Namespace, error) {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	h, err := vnetns.NewNamed(name) // moves this thread into it
	if serr := vnetns.Set(orig); serr != nil {
		// The thread is stuck in the wrong namespace: keep it locked so
		// it dies with this goroutine instead of serving others.
		return nil, fmt.Errorf("netns: returning to the original namespace: %w", serr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	n := &Namespace{Name: name, h: h}
	if n.NL, err = netlink.NewHandleAt(h); err != nil {
		n.Close()
		return nil, err
	}
	lo, err := n.NL.LinkByName("lo")
	if err == nil {
		err = n.NL.LinkSetUp(lo)
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netns %s: lo up: %w", name, err)
	}
	return n, nil
}

// Do runs f on a thread inside the namespace: sockets and devices f creates
// belong to it, and so do processes f starts.
func (n *Namespace) Do(f func() error) error {
	runtime.LockOSThread()
	orig, err := vnetns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := vnetns.Set(n.h); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := f()
	if err := vnetns.Set(orig); err != nil {
		return errors.Join(ferr, fmt.Errorf("leave netns %s: %w", n.Name, err)) // thread stays locked and dies
	}
	runtime.UnlockOSThread()
	return ferr
}

// Handle is the namespace's handle, for netlink calls that place a device
// in it (netlink.NsFd).
func (n *Namespace) Handle() vnetns.NsHandle { return n.h }

// Host is the namespace as an endpoint sees it.
func (n *Namespace) Host() *host.Netlink { return host.NewNetlink(n.NL, n.Do) }

// Start starts cmd inside the namespace; it is killed if this process dies.
func (n *Namespace) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	return n.Do(cmd.Start)
}

// Close deletes the namespace; its interfaces (and the veth peers) go with it
// once nothing holds it.
func (n *Namespace) Close() error {
	if n.NL != nil {
		n.NL.Close()
	}
	n.h.Close()
	return vnetns.DeleteNamed(n.Name)
}

// RunID returns an id that makes a run's names unique: the process id
// (so CleanStale can tell a dead run's namespaces) and a random part.
func RunID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%d-%s", os.Getpid(), hex.EncodeToString(b))
}

// CleanStale deletes the namespaces of lab runs whose process is gone (a
// run killed with SIGKILL cannot clean up after itself) and returns how
// many it removed.
func CleanStale() (int, error) {
	names, err := listNetns()
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, name := range names {
		var pid int
		if _, err := fmt.Sscanf(name, "tb-%d-", &pid); err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // its run is alive
		}
		if err := vnetns.DeleteNamed(name); err == nil {
			removed++
		}
	}
	return removed, nil
}
