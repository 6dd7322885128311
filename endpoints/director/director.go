package director

import (
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/tunbond/tunbond/scheduler/lb"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
)

// Drop reasons of the director's data path.
type Drop uint8

const (
	DropNotIP      Drop = iota // not a parsable IP packet
	DropNoService              // no virtual service for its address, port and protocol
	DropNoConn                 // a TCP packet of no known connection that is not a SYN
	DropNoServer               // the service has no usable real server
	DropTableFull              // the connection table is full of active connections
	DropFragNeeded             // too big with DF set: answered with ICMP
	DropTooBig                 // too big, no DF: IPIP would need fragmenting
	NumDrops
)

var dropNames = [...]string{"not_ip", "no_service", "no_connection", "no_server", "table_full", "frag_needed", "too_big"}

func (d Drop) String() string { return dropNames[d] }

// Verdict is what to do with a packet from the TUN.
type Verdict struct {
	Forward bool           // send Packet to Real
	Real    netip.AddrPort // the real server
	Reply   int            // > 0: write Reply bytes (an ICMP) back to the TUN
	Drop    Drop           // why not, when neither
}

// real is the director's state for one real server of one service.
type real struct {
	dest    lb.Dest
	addr    netip.AddrPort
	check   time.Duration // latency of the last health check
	passed  bool          // it has passed a health check (BGP announces no VIP on servers never checked)
	conns   uint64
	packets uint64
	bytes   uint64
	rate    rate
}

// rate is IPVS's estimator: connections, packets and bytes per second,
// sampled every 2 s and smoothed (each sample weighs a quarter).
type rate struct {
	last   [3]uint64
	cps    float64
	pps    float64
	bps    float64
	primed bool
}

func (r *rate) update(conns, packets, bytes uint64, dt float64) {
	cur := [3]uint64{conns, packets, bytes}
	var s [3]float64
	for i := range cur {
		if cur[i] >= r.last[i] {
			s[i] = float64(cur[i]-r.last[i]) / dt
		}
	}
	if !r.primed {
		r.cps, r.pps, r.bps, r.primed = s[0], s[1], s[2], true
	} else {
		r.cps += (s[0] - r.cps) / 4
		r.pps += (s[1] - r.pps) / 4
		r.bps += (s[2] - r.bps) / 4
	}
	r.last = cur
}

// service is the running state of a virtual service.
type service struct {
	svc     *Service
	reals   []*real
	byAddr  map[netip.AddrPort]*real
	sched   lb.Scheduler
	persist *persistTable
	conns   uint64
	packets uint64
	bytes   uint64
	rate    rate
}

// Director holds the virtual services and the connection table, and decides
// per packet. It is safe for concurrent use: the data path and the admin
// socket share it under one lock, taken per batch by the data path.
type Director struct {
	mu    sync.Mutex
	rules Rules
	svcs  map[svcID]*service
	table *Table
	mtu   int // egress MTU towards the real servers
	codec encap.Encapsulation
	drops [NumDrops]uint64
	icmp  []byte
	estAt time.Time // last rate estimate
	// OnVIPs, if set, is told the VIPs after every change of the rules
	// (outside the lock): the running director routes them to its TUN.
	OnVIPs func([]netip.Addr)
	// BGPStatus, if set, is `tunbond adm --bgp`'s answer.
	BGPStatus func() string
}

type svcID struct {
	proto uint8
	vip   netip.AddrPort
}

// New returns a director with a connection table of maxConns entries, for
// an egress MTU (the encapsulation's overhead comes off it).
func New(maxConns int, timeouts Timeouts, mtu int, codec encap.Encapsulation) *Director {
	return &Director{svcs: map[svcID]*service{}, table: NewTable(maxConns, timeouts), mtu: mtu, codec: codec,
		icmp: make([]byte, 1280)}
}

// Apply runs an ipvsadm change and brings the running services in line,
// keeping every connection and every real server's counters.
func (d *Director) Apply(c Command) error {
	d.mu.Lock()
	err := d.rules.Apply(c)
	if err == nil {
		err = d.sync()
	}
	vips := d.vips()
	d.mu.Unlock()
	d.notify(vips)
	return err
}

// Restore applies an ipvsadm save.
func (d *Director) Restore(save string) error {
	d.mu.Lock()
	err := d.rules.Restore(save)
	if serr := d.sync(); err == nil {
		err = serr
	}
	vips := d.vips()
	d.mu.Unlock()
	d.notify(vips)
	return err
}

// vips lists the services' addresses, each once; d.mu is held.
func (d *Director) vips() []netip.Addr {
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, s := range d.rules.Services {
		if a := s.VIP.Addr(); !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

func (d *Director) notify(vips []netip.Addr) {
	if d.OnVIPs != nil {
		d.OnVIPs(vips)
	}
}

// Save returns the rules in ipvsadm's save format.
func (d *Director) Save() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rules.Save()
}

// sync rebuilds the running state from the rules; d.mu is held.
func (d *Director) sync() error {
	keep := map[svcID]bool{}
	for _, s := range d.rules.Services {
		id := svcID{s.Proto, s.VIP}
		keep[id] = true
		st := d.svcs[id]
		if st == nil {
			st = &service{byAddr: map[netip.AddrPort]*real{}, persist: newPersistTable(d.table.max)}
			d.svcs[id] = st
		}
		st.svc = s
		st.reals = st.reals[:0]
		for _, r := range s.Reals {
			x := st.byAddr[r.Addr]
			if x == nil {
				x = &real{addr: r.Addr, dest: lb.Dest{Name: r.Addr.String(), Up: true}}
				st.byAddr[r.Addr] = x
			}
			x.dest.Weight = r.Weight
			st.reals = append(st.reals, x)
		}
		for a, x := range st.byAddr { // deleted: no new connections; existing ones go on
			if !containsReal(st.reals, x) {
				x.dest.Weight = 0
				delete(st.byAddr, a)
			}
		}
		dests := make([]*lb.Dest, len(st.reals))
		for i, x := range st.reals {
			dests[i] = &x.dest
		}
		var err error
		if st.sched, err = lb.New(s.Scheduler, dests); err != nil {
			return err
		}
	}
	for id := range d.svcs {
		if !keep[id] {
			delete(d.svcs, id)
		}
	}
	return nil
}

func containsReal(list []*real, x *real) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}

// SetHealth marks a real server of a service up or down; dropConns
// removes its connections too (IPVS's expire_nodest_conn).
func (d *Director) SetHealth(proto uint8, vip, rip netip.AddrPort, up, dropConns bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.svcs[svcID{proto, vip}]
	if st == nil || st.byAddr[rip] == nil {
		return fmt.Errorf("no real server %s in %s %s", rip, protoName(proto), vip)
	}
	x := st.byAddr[rip]
	x.dest.Up = up
	st.sched.Reset(destsOf(st))
	if !up && dropConns {
		d.table.DropDest(&x.dest)
	}
	return nil
}

// RecordCheck notes a health check's latency for the metrics.
func (d *Director) RecordCheck(proto uint8, vip, rip netip.AddrPort, took time.Duration, ok bool) (firstPass bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st := d.svcs[svcID{proto, vip}]; st != nil && st.byAddr[rip] != nil {
		x := st.byAddr[rip]
		x.check = took
		firstPass = ok && !x.passed
		x.passed = x.passed || ok
	}
	return firstPass
}

// RealUp reports whether a real server of a service is in rotation.
func (d *Director) RealUp(proto uint8, vip, rip netip.AddrPort) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := d.svcs[svcID{proto, vip}]
	return st != nil && st.byAddr[rip] != nil && st.byAddr[rip].dest.Up
}

func destsOf(st *service) []*lb.Dest {
	out := make([]*lb.Dest, len(st.reals))
	for i, x := range st.reals {
		out[i] = &x.dest
	}
	return out
}

// Lock and Unlock bracket a batch of Process calls.
func (d *Director) Lock()   { d.mu.Lock() }
func (d *Director) Unlock() { d.mu.Unlock() }

// Process decides what to do with one packet from the TUN; d is locked.
// An ICMP reply, if any, is in ICMP()[:v.Reply] until the next call.
func (d *Director) Process(pkt []byte, now time.Time) Verdict {
	f, err := header.ParseFlow(pkt)
	if err != nil {
		return d.drop(DropNotIP)
	}
	vip := netip.AddrPortFrom(f.Dst, f.DstPort)
	st := d.svcs[svcID{f.Proto, vip}]
	if st == nil {
		vip = netip.AddrPortFrom(f.Dst, 0) // a port-0 service takes every port
		st = d.svcs[svcID{f.Proto, vip}]
	}
	if st == nil {
		return d.drop(DropNoService)
	}
	if over := len(pkt) + d.codec.Overhead(); over > d.mtu {
		switch {
		case pkt[0]>>4 == 6: // IPv6 is never fragmented on the way
			n := header.ICMPv6PacketTooBig(d.icmp, f.Dst.As16(), pkt, d.mtu-d.codec.Overhead())
			d.drops[DropFragNeeded]++
			return Verdict{Reply: n, Drop: DropFragNeeded}
		case f.DontFragment:
			n := header.ICMPFragNeeded(d.icmp, f.Dst.As4(), header.IPv4(pkt), d.mtu-d.codec.Overhead())
			d.drops[DropFragNeeded]++
			return Verdict{Reply: n, Drop: DropFragNeeded}
		}
		return d.drop(DropTooBig)
	}
	k := Key{Proto: f.Proto, Client: netip.AddrPortFrom(f.Src, f.SrcPort), VIP: netip.AddrPortFrom(f.Dst, f.DstPort)}
	c := d.table.Lookup(k, f.TCPFlags, len(pkt), now)
	if c == nil {
		if f.Proto == 6 && f.TCPFlags&(FlagSYN|FlagACK) != FlagSYN && !consistent(st) {
			// Mid-connection, unknown here: under mh another director
			// (ECMP moved the flow after a failure) or this one before a
			// restart chose the server this director would choose too, so
			// the entry is made (as Katran does); under other schedulers
			// there is no telling where the connection lives.
			return d.drop(DropNoConn)
		}
		x := d.schedule(st, f, now)
		if x == nil {
			return d.drop(DropNoServer)
		}
		real := x.addr
		if real.Port() == 0 || st.svc.VIP.Port() == 0 {
			real = netip.AddrPortFrom(x.addr.Addr(), f.DstPort)
		}
		if c = d.table.Insert(k, &x.dest, real, f.TCPFlags, len(pkt), now); c == nil {
			return d.drop(DropTableFull)
		}
		c.owner = x
		x.conns++
		st.conns++
	}
	if x := c.owner; x != nil {
		x.packets++
		x.bytes += uint64(len(pkt))
	}
	st.packets++
	st.bytes += uint64(len(pkt))
	return Verdict{Forward: true, Real: c.Real}
}

// schedule picks a real server for a new connection, keeping a persistent
// service's client on its server.
func (d *Director) schedule(st *service, f header.Flow, now time.Time) *real {
	if p := st.svc.Persistent; p > 0 {
		if e := st.persist.get(f.Src, now); e != nil && e.r.dest.Up && containsReal(st.reals, e.r) {
			st.persist.put(f.Src, e.r, now, now.Add(p))
			return e.r
		}
	}
	i := st.sched.Pick(lb.Conn{Src: f.Src, Dst: f.Dst, SrcPort: f.SrcPort, DstPort: f.DstPort, Proto: f.Proto})
	if i < 0 {
		return nil
	}
	x := st.reals[i]
	if p := st.svc.Persistent; p > 0 {
		st.persist.put(f.Src, x, now, now.Add(p))
	}
	return x
}

func (d *Director) drop(r Drop) Verdict {
	d.drops[r]++
	return Verdict{Drop: r}
}

// ICMP is the buffer holding the last ICMP reply.
func (d *Director) ICMP() []byte { return d.icmp }

// Drops returns the drop counters.
func (d *Director) Drops() [NumDrops]uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.drops
}

// Estimate updates the rates when 2 s have passed since the last update.
func (d *Director) Estimate(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.estAt.IsZero() {
		d.estAt = now
		for _, st := range d.svcs {
			st.rate.update(st.conns, st.packets, st.bytes, 1)
			st.rate = rate{last: st.rate.last}
			for _, x := range st.reals {
				x.rate = rate{last: [3]uint64{x.conns, x.packets, x.bytes}}
			}
		}
		return
	}
	dt := now.Sub(d.estAt).Seconds()
	if dt < 2 {
		return
	}
	d.estAt = now
	for _, st := range d.svcs {
		st.rate.update(st.conns, st.packets, st.bytes, dt)
		for _, x := range st.reals {
			x.rate.update(x.conns, x.packets, x.bytes, dt)
		}
	}
}

// Expire removes timed-out connections and persistence entries.
func (d *Director) Expire(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.table.Expire(now)
	for _, st := range d.svcs {
		st.persist.expire(now)
	}
}

// consistent reports whether every director with the same real servers and
// weights picks the same server for a flow: Maglev hashing (mh), without
// persistence (which remembers per director).
func consistent(st *service) bool {
	return st.svc.Scheduler == "mh" && st.svc.Persistent == 0
}

// HealthyVIPs are the VIPs of the services that have a real server up
// with a weight (and, with checked, that has passed a health check: a
// director just started announces nothing its checks have not seen up):
// what BGP announces.
func (d *Director) HealthyVIPs(checked bool) []netip.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[netip.Addr]bool{}
	var out []netip.Addr
	for _, st := range d.svcs {
		v := st.svc.VIP.Addr()
		if seen[v] {
			continue
		}
		for _, x := range st.reals {
			if x.dest.Up && x.dest.Weight > 0 && (x.passed || !checked) {
				seen[v] = true
				out = append(out, v)
				break
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Conns is how many connections the table holds, and its size.
func (d *Director) Conns() (n, max int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.table.Len(), d.table.max
}

// TableStats returns the table's counters.
func (d *Director) TableStats() TableStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.table.Stats
}
