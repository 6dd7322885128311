package director

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"
)

// checkID names one real server of one service: each has its own check.
type checkID struct {
	proto    uint8
	vip, rip netip.AddrPort
}

func (c checkID) String() string { return fmt.Sprintf("%s %s -> %s", protoName(c.proto), c.vip, c.rip) }

// checker is one running health check.
type checker struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// syncChecks runs exactly one check per real server of every service: a
// real server added (`tunbond adm -a`) gets one, a deleted one's stops
// before syncChecks returns. r.syncMu is held.
func (r *Running) syncChecks() {
	c := r.cfg.Check
	if c.Type == "" || c.Type == "none" {
		return
	}
	want := map[checkID]bool{}
	for _, s := range r.rulesSnapshot() {
		for _, x := range s.Reals {
			want[checkID{s.Proto, s.VIP, x.Addr}] = true
		}
	}
	for id, ch := range r.checks {
		if !want[id] {
			ch.cancel()
			<-ch.done
			delete(r.checks, id)
		}
	}
	for id := range want {
		if r.checks[id] != nil {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch := &checker{cancel: cancel, done: make(chan struct{})}
		r.checks[id] = ch
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(ch.done)
			r.checkLoop(ctx, id)
		}()
	}
}

// stopChecks stops every check and waits for them. r.syncMu is held.
func (r *Running) stopChecks() {
	for id, ch := range r.checks {
		ch.cancel()
		<-ch.done
		delete(r.checks, id)
	}
}

// Checked lists the real servers being health-checked, sorted, one
// "TCP vip -> real" each.
func (r *Running) Checked() []string {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	var out []string
	for id := range r.checks {
		out = append(out, id.String())
	}
	sort.Strings(out)
	return out
}

// checkLoop probes one real server every interval until ctx ends; rise
// successes in a row bring it up, fall failures take it down.
func (r *Running) checkLoop(ctx context.Context, id checkID) {
	c := r.cfg.Check
	up, streak := true, 0
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		t0 := r.now()
		ok := r.probeFn(ctx, id.rip) == nil
		if ctx.Err() != nil {
			return // stopped while probing: the answer means nothing
		}
		if r.Director.RecordCheck(id.proto, id.vip, id.rip, r.now().Sub(t0), ok) {
			r.announce() // its first pass: its VIP may be announced now
		}
		if ok == up {
			streak = 0
		} else {
			streak++
			if (ok && streak >= c.Rise) || (!ok && streak >= c.Fall) {
				up, streak = ok, 0
				r.log.Info("real server health", "service", id.vip, "real", id.rip, "up", up)
				_ = r.Director.SetHealth(id.proto, id.vip, id.rip, up, !up && r.cfg.ExpireNoDest)
				r.announce() // a VIP whose last server failed is withdrawn, and back with the first up
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// probe connects to the real server (its own address, not the VIP) and,
// for http, asks for the path and wants a 2xx or 3xx.
func (r *Running) probe(ctx context.Context, rip netip.AddrPort) error {
	c := r.cfg.Check
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var conn net.Conn
	if err := r.host.Do(func() (err error) {
		var d net.Dialer
		conn, err = d.DialContext(ctx, "tcp", rip.String())
		return
	}); err != nil {
		return err
	}
	defer conn.Close()
	if c.Type != "http" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: tunbond-check\r\n\r\n", c.Path, rip.Addr())
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	f := strings.Fields(line)
	if len(f) < 2 || (f[1][0] != '2' && f[1][0] != '3') {
		return fmt.Errorf("http status %q", strings.TrimSpace(line))
	}
	return nil
}
