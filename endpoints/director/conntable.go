// Package director is the IPVS-TUN style director: virtual services, real
// servers, the connection table, and (later) the data path that
// encapsulates to the real servers.
package director

import (
	"net/netip"
	"time"

	"github.com/tunbond/tunbond/scheduler/lb"
)

// State is a connection's state as the director sees it: from the client's
// packets only (the real servers answer the client directly).
type State uint8

const (
	StateSynRecv State = iota // SYN seen
	StateEstablished
	StateFinWait // FIN seen
	StateClose   // RST seen
	StateUDP
	// StateUnconfirmed: the handshake's ACK seen (or a first packet in
	// mid-connection), and nothing more yet. A spoofed SYN and ACK pair
	// gets no further: such entries time out soon and go first when the
	// table is full (IPVS's secure_tcp idea).
	StateUnconfirmed
	numStates
)

var stateNames = [...]string{"SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE", "UDP", "UNCONFIRMED"}

// confirmPackets is how many client packets confirm a TCP connection: more
// than the handshake's SYN and ACK.
const confirmPackets = 3

func (s State) String() string { return stateNames[s] }

// Timeouts per state, IPVS's defaults (ipvsadm --set tcp tcpfin udp sets
// the three main ones).
type Timeouts [numStates]time.Duration

// DefaultTimeouts are IPVS's: established 900 s, FIN 120 s, UDP 300 s,
// CLOSE 10 s; but SYN_RECV and UNCONFIRMED 10 s, as IPVS's secure_tcp has
// SYN_RECV: an entry no more than a handshake confirmed is cheap to forge.
var DefaultTimeouts = Timeouts{
	StateSynRecv: 10 * time.Second, StateEstablished: 900 * time.Second,
	StateFinWait: 120 * time.Second, StateClose: 10 * time.Second, StateUDP: 300 * time.Second,
	StateUnconfirmed: 10 * time.Second,
}

// TCP flags the state machine reads.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagACK = 0x10
)

// Key is a connection: protocol, client address and port, virtual address
// and port.
type Key struct {
	Proto  uint8
	Client netip.AddrPort
	VIP    netip.AddrPort
}

// Conn is one entry of the table.
type Conn struct {
	Key     Key
	Dest    *lb.Dest
	Real    netip.AddrPort // where the connection's packets go
	owner   *real          // the director's state for that server (its counters)
	State   State
	Expires time.Time
	Packets uint64
	Bytes   uint64
	prev    *Conn
	next    *Conn
	slot    int // its index in Table.all
}

func (c *Conn) active() bool { return c.State == StateEstablished }

// TableStats count the table's life. Evicted counts entries removed to
// make room, by what they were: unconfirmed (SYN_RECV, UNCONFIRMED),
// inactive (FIN_WAIT, CLOSE, UDP) or idle established.
type TableStats struct {
	Created, Expired, Refused, Reused uint64
	Evicted                           [numEvictClasses]uint64
}

// Eviction classes, in the order a full table evicts.
const (
	EvictUnconfirmed = iota
	EvictInactive
	EvictIdle
	numEvictClasses
)

// evictOrder lists the states of each eviction class.
var evictOrder = [numEvictClasses][]State{
	EvictUnconfirmed: {StateSynRecv, StateUnconfirmed},
	EvictInactive:    {StateFinWait, StateClose, StateUDP},
	EvictIdle:        {StateEstablished},
}

// Table maps connections to real servers. Entries of one state share a
// timeout, so each state's list, in order of last packet, is in order of
// expiry: expiring and evicting cost O(1) per entry. A full table evicts,
// so a new connection is never refused: the unconfirmed entry that
// expires first, else the inactive one, else the established one idle the
// longest. Every entry also sits in a dense slice (all), which a listing
// copies a chunk at a time (Snapshot). Not safe for concurrent use.
type Table struct {
	max      int
	timeouts Timeouts
	idx      index[Key, Conn]
	lists    [numStates]list
	all      []*Conn
	free     *Conn // dropped entries to reuse (through next), at most maxFree
	nfree    int
	Stats    TableStats
}

type list struct{ head, tail *Conn }

func (l *list) push(c *Conn) {
	c.prev, c.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = c
	} else {
		l.head = c
	}
	l.tail = c
}

func (l *list) remove(c *Conn) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		l.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		l.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// maxFree bounds the dropped entries a table keeps for reuse.
const maxFree = 1 << 16

// NewTable returns a table of at most max connections.
func NewTable(max int, t Timeouts) *Table {
	return &Table{max: max, timeouts: t, idx: newIndex(func(c *Conn) Key { return c.Key })}
}

// Len is the number of connections.
func (t *Table) Len() int { return t.idx.len() }

// Lookup finds the connection of a packet and updates its state from the
// packet's TCP flags (ignored for UDP), or returns nil.
func (t *Table) Lookup(k Key, flags uint8, size int, now time.Time) *Conn {
	c := t.idx.get(k)
	if c == nil {
		return nil
	}
	if !now.Before(c.Expires) {
		t.drop(c)
		t.Stats.Expired++
		return nil
	}
	if k.Proto == 6 && flags&(FlagSYN|FlagACK) == FlagSYN && (c.State == StateFinWait || c.State == StateClose) {
		// The client reuses the ports of a closing connection: a new
		// connection, to schedule anew (IPVS's conn_reuse_mode).
		t.drop(c)
		t.Stats.Reused++
		return nil
	}
	t.touch(c, confirm(next(c.State, k.Proto, flags), c.Packets+1), size, now)
	return c
}

// Insert adds a new connection to dest. A full table first evicts its
// oldest inactive connection; with none to evict it refuses (nil).
func (t *Table) Insert(k Key, dest *lb.Dest, real netip.AddrPort, flags uint8, size int, now time.Time) *Conn {
	if t.idx.len() >= t.max {
		t.Expire(now)
	}
	if t.idx.len() >= t.max && !t.evict() {
		t.Stats.Refused++ // a table of no entries
		return nil
	}
	st := StateSynRecv
	if k.Proto == 17 {
		st = StateUDP
	} else if flags&FlagSYN == 0 {
		// Mid-stream (after a director restart, or from another director
		// under mh): unconfirmed whatever the flags, so a forged FIN or
		// RST makes no long-lived entry that outranks unconfirmed ones.
		st = StateUnconfirmed
	}
	c := t.free
	if c != nil {
		t.free, t.nfree = c.next, t.nfree-1
		*c = Conn{Key: k, Dest: dest, Real: real, State: st, slot: len(t.all)}
	} else {
		c = &Conn{Key: k, Dest: dest, Real: real, State: st, slot: len(t.all)}
	}
	t.idx.put(c)
	t.all = append(t.all, c)
	t.Stats.Created++
	t.count(c, +1)
	c.Expires = now.Add(t.timeouts[st])
	c.Packets, c.Bytes = 1, uint64(size)
	t.lists[st].push(c)
	return c
}

// next is the state after a client packet with these flags.
func next(s State, proto uint8, flags uint8) State {
	if proto == 17 {
		return StateUDP
	}
	switch {
	case flags&FlagRST != 0:
		return StateClose
	case flags&FlagFIN != 0:
		return StateFinWait
	case flags&FlagSYN != 0 && flags&FlagACK == 0:
		if s == StateEstablished {
			return s // a stray SYN does not reset an established connection
		}
		return StateSynRecv
	case flags&FlagACK != 0 && (s == StateSynRecv || s == StateUnconfirmed || s == StateEstablished):
		return StateEstablished
	}
	return s
}

// confirm holds back ESTABLISHED until a connection has shown more than
// its handshake: packets is how many client packets it has had, this one
// included.
func confirm(s State, packets uint64) State {
	if s == StateEstablished && packets < confirmPackets {
		return StateUnconfirmed
	}
	return s
}

func (t *Table) touch(c *Conn, st State, size int, now time.Time) {
	t.lists[c.State].remove(c)
	if st != c.State {
		t.count(c, -1)
		c.State = st
		t.count(c, +1)
	}
	c.Expires = now.Add(t.timeouts[st])
	c.Packets++
	c.Bytes += uint64(size)
	t.lists[st].push(c)
}

// count adds d to the connection's server's active or inactive count.
func (t *Table) count(c *Conn, d int64) {
	if c.Dest == nil {
		return
	}
	if c.active() {
		c.Dest.Active += d
	} else {
		c.Dest.Inactive += d
	}
}

func (t *Table) drop(c *Conn) {
	t.lists[c.State].remove(c)
	t.count(c, -1)
	t.idx.del(c)
	last := t.all[len(t.all)-1] // swap the last into c's place
	t.all[c.slot], last.slot = last, c.slot
	t.all[len(t.all)-1] = nil
	t.all = t.all[:len(t.all)-1]
	if t.nfree < maxFree { // reused by Insert: a flood allocates nothing
		*c = Conn{next: t.free}
		t.free, t.nfree = c, t.nfree+1
	}
}

// Expire removes every connection whose time is up.
func (t *Table) Expire(now time.Time) {
	for s := range t.lists {
		for c := t.lists[s].head; c != nil && !now.Before(c.Expires); c = t.lists[s].head {
			t.drop(c)
			t.Stats.Expired++
		}
	}
}

// evict removes one connection to make room: of the first eviction class
// that has any, the one that expires first (the least recently used of its
// state). It fails only on an empty table.
func (t *Table) evict() bool {
	for class, states := range evictOrder {
		var victim *Conn
		for _, s := range states {
			if h := t.lists[s].head; h != nil && (victim == nil || h.Expires.Before(victim.Expires)) {
				victim = h
			}
		}
		if victim != nil {
			t.drop(victim)
			t.Stats.Evicted[class]++
			return true
		}
	}
	return false
}

// ConnInfo is what a listing shows of a connection: a copy, taken under
// the lock, printed outside it.
type ConnInfo struct {
	Key     Key
	Real    netip.AddrPort
	State   State
	Expires time.Time
}

// Snapshot appends to out the connections from index from on, at most n,
// and returns them and the index to go on from (Len() when done). Between
// calls the table may change: an entry moved by a removal may be listed
// twice or not at all, as a listing of a live table is.
func (t *Table) Snapshot(out []ConnInfo, from, n int) ([]ConnInfo, int) {
	end := min(from+n, len(t.all))
	for _, c := range t.all[min(from, end):end] {
		out = append(out, ConnInfo{Key: c.Key, Real: c.Real, State: c.State, Expires: c.Expires})
	}
	return out, end
}

// DropDest removes every connection to dest (IPVS's expire_nodest_conn,
// for a server that failed its checks or was deleted).
func (t *Table) DropDest(dest *lb.Dest) int {
	n := 0
	for i := len(t.all) - 1; i >= 0; i-- { // a drop moves the last (seen) entry to i
		if c := t.all[i]; c.Dest == dest {
			t.drop(c)
			n++
		}
	}
	return n
}
