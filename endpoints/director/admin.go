package director

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/tunbond/tunbond/endpoints/ctlsock"
)

// DefaultAdminSocket is where the director listens for `tunbond adm`.
const DefaultAdminSocket = "/run/tunbond/director.sock"

// Admin runs one ipvsadm command line against the director and returns
// what ipvsadm would print. input is the save to restore, for -R.
func (d *Director) Admin(args []string, input string, now time.Time) (string, error) {
	if len(args) == 1 && args[0] == "--bgp" { // not ipvsadm's: the BGP speaker's peers
		if d.BGPStatus == nil {
			return "", errors.New("no bgp section in the config: the director announces nothing")
		}
		return d.BGPStatus(), nil
	}
	c, err := ParseCommand(args)
	if err != nil {
		return "", err
	}
	switch c.Op {
	case OpList:
		return d.list(c, now), nil
	case OpSave:
		return d.Save(), nil
	case OpRestore:
		return "", d.Restore(input)
	case OpZero:
		d.mu.Lock()
		for _, st := range d.svcs {
			st.conns, st.packets, st.bytes = 0, 0, 0
			for _, x := range st.reals {
				x.conns, x.packets, x.bytes = 0, 0, 0
			}
		}
		d.mu.Unlock()
		return "", nil
	}
	return "", d.Apply(c)
}

// list prints like ipvsadm -L -n (with --stats, --rate or -c).
func (d *Director) list(c Command, now time.Time) string {
	var b strings.Builder
	if c.Conns {
		b.WriteString("IPVS connection entries\npro expire state       source             virtual            destination\n")
		var lines []string
		for _, x := range d.SnapshotConns() {
			left := x.Expires.Sub(now)
			if left < 0 {
				left = 0
			}
			s := int(left / time.Second)
			lines = append(lines, fmt.Sprintf("%-3s %02d:%02d  %-11s %-18s %-18s %s\n", protoName(x.Key.Proto),
				s/60, s%60, x.State, x.Key.Client, x.Key.VIP, x.Real))
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, ""))
		return b.String()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(&b, "IP Virtual Server version 1.2.1 (size=%d)\n", d.table.max)
	switch {
	case c.Stats:
		b.WriteString("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n")
	case c.Rate:
		b.WriteString("Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n")
	default:
		b.WriteString("Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
	}
	for _, s := range sortedServices(d.rules.Services) {
		st := d.svcs[svcID{s.Proto, s.VIP}]
		name := fmt.Sprintf("%s  %s", protoName(s.Proto), s.VIP)
		switch {
		case c.Stats:
			fmt.Fprintf(&b, "%-33s %8d %8d %8d %8s %8s\n", name, st.conns, st.packets, 0, human(st.bytes), "0")
		case c.Rate:
			fmt.Fprintf(&b, "%-33s %8.0f %8.0f %8d %8.0f %8d\n", name, st.rate.cps, st.rate.pps, 0, st.rate.bps, 0)
		default:
			fmt.Fprintf(&b, "%s %s", name, s.Scheduler)
			if s.Persistent > 0 {
				fmt.Fprintf(&b, " persistent %d", int(s.Persistent/time.Second))
			}
			b.WriteString("\n")
		}
		for _, x := range st.reals {
			switch {
			case c.Stats:
				fmt.Fprintf(&b, "  -> %-28s %8d %8d %8d %8s %8s\n", x.addr, x.conns, x.packets, 0, human(x.bytes), "0")
			case c.Rate:
				fmt.Fprintf(&b, "  -> %-28s %8.0f %8.0f %8d %8.0f %8d\n", x.addr, x.rate.cps, x.rate.pps, 0, x.rate.bps, 0)
			default:
				fmt.Fprintf(&b, "  -> %-28s %-7s %-6d %-10d %-10d\n", x.addr, "Tunnel", x.dest.Weight, x.dest.Active, x.dest.Inactive)
			}
		}
	}
	return b.String()
}

func sortedServices(in []*Service) []*Service {
	s := append([]*Service(nil), in...)
	sort.SliceStable(s, func(i, j int) bool {
		if s[i].Proto != s[j].Proto {
			return s[i].Proto < s[j].Proto
		}
		return s[i].VIP.Compare(s[j].VIP) < 0
	})
	return s
}

// human prints bytes as ipvsadm does (K, M, G).
func human(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dM", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dK", n>>10)
	}
	return fmt.Sprint(n)
}

// AdminRequest is one line on the admin socket.
type AdminRequest struct {
	Args  []string `json:"args"`
	Input string   `json:"input,omitempty"`
}

// AdminResponse is the answer.
type AdminResponse struct {
	Output string `json:"output,omitempty"`
	Error  string `json:"error,omitempty"`
}

// ServeAdmin answers AdminRequests on a unix socket at path until the
// server is closed.
func ServeAdmin(path string, d *Director) (*ctlsock.Server, error) {
	return serveAdmin(path, d, time.Now)
}

func serveAdmin(path string, d *Director, now func() time.Time) (*ctlsock.Server, error) {
	s, err := ctlsock.Serve(path, 10*time.Second, func(req AdminRequest) any {
		out, err := d.Admin(req.Args, req.Input, now())
		resp := AdminResponse{Output: out}
		if err != nil {
			resp.Error = err.Error()
		}
		return resp
	}, func(err error) any { return AdminResponse{Error: "bad request: " + err.Error()} })
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return s, nil
}

// AdminCall sends one command to the director at socket.
func AdminCall(socket string, args []string, input string) (string, error) {
	var resp AdminResponse
	if err := ctlsock.Call(socket, "tunbond director", 10*time.Second, AdminRequest{Args: args, Input: input}, &resp); err != nil {
		return "", fmt.Errorf("admin %w", err)
	}
	if resp.Error != "" {
		return resp.Output, errors.New(resp.Error)
	}
	return resp.Output, nil
}

// snapshotChunk is how many connections a listing copies per hold of the
// data path's lock: 0.16 ms here (BenchmarkSnapshot).
const snapshotChunk = 4096

// SnapshotConns copies the connection table for a listing a chunk at a
// time, letting the data path run between chunks, so listing 300,000
// connections never stops forwarding for more than a chunk's copy.
func (d *Director) SnapshotConns() []ConnInfo {
	var out []ConnInfo
	for from := 0; ; {
		d.mu.Lock()
		var next int
		out, next = d.table.Snapshot(out, from, snapshotChunk)
		done := next >= d.table.Len()
		d.mu.Unlock()
		if done {
			return out
		}
		from = next
	}
}
