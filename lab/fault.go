package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tunbond/tunbond/lab/netns"
)

// Fault kinds.
const (
	// FaultBlackhole drops every frame arriving on an uplink's host-side
	// veths (site A's and site B's ul<i>, so both directions) while carrier
	// and the addresses stay: a path that dies silently.
	FaultBlackhole = "blackhole"
	// FaultDown sets site A's uplink down (carrier lost), and up again at
	// the end if the fault has one.
	FaultDown = "down"
)

// Fault is one scheduled fault of every method's run, at offsets from the
// start of the measured interval (after the warm-up).
type Fault struct {
	Kind  string        // FaultBlackhole or FaultDown
	Link  int           // uplink index, from 0 (link-1 is 0)
	Start time.Duration // from the start of the measured interval
	End   time.Duration // 0: until the end of the run
}

func (f Fault) String() string {
	s := fmt.Sprintf("%s:link%d@%v", f.Kind, f.Link+1, f.Start)
	if f.End > 0 {
		s += fmt.Sprintf("-%v", f.End)
	}
	return s
}

// ParseFaults parses fault specs, each one or several separated by commas:
// KIND:linkN@START[-END], KIND blackhole or down, N from 1, START and END
// Go durations ("8s", "1500ms"). A blackhole needs an END.
func ParseFaults(specs []string) ([]Fault, error) {
	var out []Fault
	for _, spec := range specs {
		for _, s := range strings.Split(spec, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			f, err := parseFault(s)
			if err != nil {
				return nil, fmt.Errorf("fault %q: %w", s, err)
			}
			out = append(out, f)
		}
	}
	return out, nil
}

func parseFault(s string) (Fault, error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Fault{}, errors.New("want KIND:linkN@START[-END], e.g. blackhole:link1@8s-16s")
	}
	f := Fault{Kind: kind}
	if kind != FaultBlackhole && kind != FaultDown {
		return Fault{}, fmt.Errorf("no fault kind %q (blackhole, down)", kind)
	}
	link, when, ok := strings.Cut(rest, "@")
	if !ok {
		return Fault{}, errors.New("no @START: say when, e.g. link1@8s")
	}
	num, ok := strings.CutPrefix(link, "link")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 {
		return Fault{}, fmt.Errorf("link %q: want link1, link2, ... (numbered from 1 as in the table)", link)
	}
	f.Link = n - 1
	start, end, hasEnd := strings.Cut(when, "-")
	if f.Start, err = time.ParseDuration(start); err != nil || f.Start < 0 {
		return Fault{}, fmt.Errorf("start %q: want a duration such as 8s", start)
	}
	if hasEnd {
		if f.End, err = time.ParseDuration(end); err != nil {
			return Fault{}, fmt.Errorf("end %q: want a duration such as 16s", end)
		}
		if f.End <= f.Start {
			return Fault{}, fmt.Errorf("end %v is not after start %v", f.End, f.Start)
		}
	} else if kind == FaultBlackhole {
		return Fault{}, errors.New("a blackhole needs an end (@START-END): its filter is what ends it")
	}
	return f, nil
}

// checkFaults refuses faults a run of d over links uplinks cannot hold.
func checkFaults(faults []Fault, links int, d time.Duration) error {
	for _, f := range faults {
		if f.Link >= links {
			return fmt.Errorf("fault %s: there are only %d links", f, links)
		}
		if f.Start >= d {
			return fmt.Errorf("fault %s: starts after the %v run", f, d)
		}
		if f.End > d {
			return fmt.Errorf("fault %s: ends after the %v run", f, d)
		}
	}
	return nil
}

// faultWindow is the span from the first fault's start to the last one's
// end (the run's end for a fault without one).
func faultWindow(faults []Fault, d time.Duration) (from, to time.Duration) {
	from = d
	for _, f := range faults {
		end := f.End
		if end == 0 {
			end = d
		}
		from, to = min(from, f.Start), max(to, end)
	}
	return from, to
}

// dropProg is a loaded BPF_PROG_TYPE_SCHED_CLS program.
type dropProg struct{ fd int }

// loadDropProg loads the blackhole's program: TC_ACT_SHOT (2) for every
// packet (r0 = 2; exit).
func loadDropProg() (*dropProg, error) {
	return loadSchedCls([]uint64{
		0xb7 | 2<<32, // BPF_ALU64|BPF_MOV|BPF_K, dst r0, imm 2
		0x95,         // BPF_JMP|BPF_EXIT
	}, "blackhole's")
}

// loadSchedCls loads a BPF_PROG_TYPE_SCHED_CLS program
// with the verifier's log in the error if it refuses it.
func loadSchedCls(insns []uint64, what string) (*dropProg, error) {
	license := []byte("GPL\x00")
	logBuf := make([]byte, 1<<16)
	attr := struct {
		progType, insnCnt  uint32
		insns, license     uint64
		logLevel, logSize  uint32
		logBuf             uint64
		kernVersion, flags uint32
	}{progType: unix.BPF_PROG_TYPE_SCHED_CLS, insnCnt: uint32(len(insns)),
		insns: uint64(uintptr(unsafe.Pointer(&insns[0]))), license: uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1, logSize: uint32(len(logBuf)), logBuf: uint64(uintptr(unsafe.Pointer(&logBuf[0])))}
	fd, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if e != 0 {
		log, _, _ := bytes.Cut(logBuf, []byte{0})
		return nil, fmt.Errorf("loading the %s BPF program: %w: %s", what, e, log)
	}
	unix.CloseOnExec(int(fd))
	return &dropProg{fd: int(fd)}, nil
}

func (p *dropProg) Close() error { return unix.Close(p.fd) }

// Blackhole drops everything arriving on uplink i's host-side veths, in
// site A and site B, until it is removed: a clsact qdisc on each with an
// ingress BPF filter in direct-action mode that returns TC_ACT_SHOT. The
// WAN namespace is left alone (its emulator reads frames with packet
// sockets, before tc ingress could drop them).
type Blackhole struct {
	removes []func() error // a filter (and its qdisc) each
	prog    *dropProg      // owned (BlackholeUplink), or nil
}

// addIngressFilter puts prog on link l in ns as an ingress filter in
// direct-action mode, on a clsact qdisc of its own; remove takes both off.
func addIngressFilter(ns *netns.Namespace, l netlink.Link, prog *dropProg, name string) (remove func() error, err error) {
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT}}
	if err := ns.NL.QdiscAdd(q); err != nil {
		return nil, fmt.Errorf("%s: clsact qdisc: %w", l.Attrs().Name, err)
	}
	remove = func() error { return ns.NL.QdiscDel(q) }
	f := &netlink.BpfFilter{FilterAttrs: netlink.FilterAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_MIN_INGRESS,
		Handle: 1, Priority: 1, Protocol: unix.ETH_P_ALL}, Fd: prog.fd, Name: name, DirectAction: true}
	if err := ns.NL.FilterAdd(f); err != nil {
		remove()
		return nil, fmt.Errorf("%s: ingress bpf filter: %w", l.Attrs().Name, err)
	}
	return remove, nil
}

// StartBlackhole puts the blackhole on uplink i of the net's sites.
func StartBlackhole(n *netns.Net, i int, prog *dropProg) (_ *Blackhole, err error) {
	b := &Blackhole{}
	defer func() {
		if err != nil {
			b.Stop()
		}
	}()
	for _, side := range []string{"a", "b"} {
		ns := n.NS(side)
		l, err := ns.NL.LinkByName(netns.UplinkName(i))
		if err != nil {
			return nil, err
		}
		remove, err := addIngressFilter(ns, l, prog, "tunbond-blackhole")
		if err != nil {
			return nil, fmt.Errorf("blackhole %s: %w", side, err)
		}
		b.removes = append(b.removes, remove)
	}
	return b, nil
}

// BlackholeUplink puts a blackhole on uplink i of the net's sites (as
// StartBlackhole, with its own program, closed by Stop).
func BlackholeUplink(n *netns.Net, i int) (*Blackhole, error) {
	prog, err := loadDropProg()
	if err != nil {
		return nil, err
	}
	b, err := StartBlackhole(n, i, prog)
	if err != nil {
		prog.Close()
		return nil, err
	}
	b.prog = prog
	return b, nil
}

// Stop removes the filters (and their clsact qdiscs): the link carries again.
func (b *Blackhole) Stop() error {
	var errs []error
	if b.prog != nil {
		defer func() { b.prog.Close(); b.prog = nil }()
	}
	for _, remove := range b.removes {
		errs = append(errs, remove())
	}
	b.removes = nil
	return errors.Join(errs...)
}

// faultEvent is one step of a schedule: at, do.
type faultEvent struct {
	at   time.Duration
	name string
	do   func() error
}

// faults runs the faults of a run on net: Run applies them at their offsets
// from t0, and undoes those still in force when ctx ends.
type faults struct {
	net  *netns.Net
	prog *dropProg
	list []Fault

	mu   sync.Mutex
	undo map[int]func() error // per fault index, while in force
}

func (fs *faults) events() []faultEvent {
	var ev []faultEvent
	for k, f := range fs.list {
		k, f := k, f
		dev := netns.UplinkName(f.Link)
		var on, off func() error
		switch f.Kind {
		case FaultBlackhole:
			on = func() error {
				b, err := StartBlackhole(fs.net, f.Link, fs.prog)
				if err == nil {
					fs.setUndo(k, b.Stop)
				}
				return err
			}
		case FaultDown:
			on = func() error {
				err := fs.net.SetLinkUp("a", dev, false)
				if err == nil {
					fs.setUndo(k, func() error { return fs.net.SetLinkUp("a", dev, true) })
				}
				return err
			}
		}
		off = func() error { return fs.runUndo(k) }
		ev = append(ev, faultEvent{f.Start, f.String() + " on", on})
		if f.End > 0 {
			ev = append(ev, faultEvent{f.End, f.String() + " off", off})
		}
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].at < ev[j].at })
	return ev
}

func (fs *faults) setUndo(k int, f func() error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.undo == nil {
		fs.undo = map[int]func() error{}
	}
	fs.undo[k] = f
}

func (fs *faults) runUndo(k int) error {
	fs.mu.Lock()
	f := fs.undo[k]
	delete(fs.undo, k)
	fs.mu.Unlock()
	if f == nil {
		return nil
	}
	return f()
}

// Run waits for the measured interval's start on t0c, then applies the
// schedule until ctx ends, and returns once every fault is undone.
func (fs *faults) Run(ctx context.Context, t0c <-chan time.Time) (err error) {
	var errs []error
	defer func() {
		for k := range fs.list {
			if uerr := fs.runUndo(k); uerr != nil {
				errs = append(errs, uerr)
			}
		}
		err = errors.Join(errs...)
	}()
	var t0 time.Time
	select {
	case t0 = <-t0c:
	case <-ctx.Done():
		return nil
	}
	for _, e := range fs.events() {
		if wait := time.Until(t0.Add(e.at)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil
			}
		}
		if err := e.do(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", e.name, err))
		}
	}
	<-ctx.Done()
	return nil
}
