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
// max.
type persistTable struct {
	max     int
	m       map[netip.Addr]*clist.Element // of *persistEntry
	order   clist.List                    // least recently used first
	evicted uint64
}

type persistEntry struct {
	client  netip.Addr
	r       *real
	expires time.Time
}

func newPersistTable(max int) *persistTable {
	return &persistTable{max: max, m: map[netip.Addr]*clist.Element{}}
}

// get returns client's entry if it has not expired.
func (p *persistTable) get(client netip.Addr, now time.Time) *persistEntry {
	el := p.m[client]
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
	if el := p.m[client]; el != nil {
		e := el.Value.(*persistEntry)
		e.r, e.expires = r, expires
		p.order.MoveToBack(el)
		return
	}
	if len(p.m) >= p.max {
		p.expire(now)
	}
	for len(p.m) >= p.max && p.order.Len() > 0 {
		p.remove(p.order.Front())
		p.evicted++
	}
	if p.max <= 0 {
		return
	}
	p.m[client] = p.order.PushBack(&persistEntry{client: client, r: r, expires: expires})
}

// expire drops the entries that have expired by now.
func (p *persistTable) expire(now time.Time) {
	for el := p.order.Front(); el != nil && !now.Before(el.Value.(*persistEntry).expires); el = p.order.Front() {
		p.remove(el)
	}
}

func (p *persistTable) remove(el *clist.Element) {
	delete(p.m, el.Value.(*persistEntry).client)
	p.order.Remove(el)
}

func (p *persistTable) len() int { return len(p.m) }
