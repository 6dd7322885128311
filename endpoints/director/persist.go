package director

import (
	clist "container/list"
	"net/netip"
	"time"
)

// persistTable is a persistent service's client → real server map
// (ipvsadm -p): at most max clients, in order of last use, so expiring
// and evicting the oldest cost O(1) (one service's entries share a
// timeout). A flood of new sources evicts the oldest, never grows it past
// max, and reuses the evicted entry: it allocates nothing once full.
type persistTable struct {
	max     int
	m       index[netip.Addr, clist.Element] // of *persistEntry
	order   clist.List                       // least recently used first
	evicted uint64
}

type persistEntry struct {
	client  netip.Addr
	r       *real
	expires time.Time
}

func newPersistTable(max int) *persistTable {
	return &persistTable{max: max, m: newIndex(func(el *clist.Element) netip.Addr { return el.Value.(*persistEntry).client })}
}

// get returns client's entry if it has not expired.
func (p *persistTable) get(client netip.Addr, now time.Time) *persistEntry {
	el := p.m.get(client)
	if el == nil {
		return nil
	}
	e := el.Value.(*persistEntry)
	if !now.Before(e.expires) {
		return nil
	}
	return e
}

// put keeps client on r until expires, as the most recently used; a full
// table first drops what has expired by now, then its least recently used.
func (p *persistTable) put(client netip.Addr, r *real, now, expires time.Time) {
	if el := p.m.get(client); el != nil {
		e := el.Value.(*persistEntry)
		e.r, e.expires = r, expires
		p.order.MoveToBack(el)
		return
	}
	if p.max <= 0 {
		return
	}
	if p.m.len() >= p.max {
		p.expire(now)
	}
	if p.m.len() >= p.max { // the least recently used makes room, its entry reused
		el := p.order.Front()
		p.m.del(el)
		*el.Value.(*persistEntry) = persistEntry{client: client, r: r, expires: expires}
		p.order.MoveToBack(el)
		p.m.put(el)
		p.evicted++
		return
	}
	p.m.put(p.order.PushBack(&persistEntry{client: client, r: r, expires: expires}))
}

// expire drops the entries that have expired by now.
func (p *persistTable) expire(now time.Time) {
	for el := p.order.Front(); el != nil && !now.Before(el.Value.(*persistEntry).expires); el = p.order.Front() {
		p.remove(el)
	}
}

func (p *persistTable) remove(el *clist.Element) {
	p.m.del(el)
	p.order.Remove(el)
}

func (p *persistTable) len() int { return p.m.len() }
