package director

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tunbond/tunbond/scheduler/lb"
)

// Service is a virtual service: protocol and VIP:port (port 0: every
// port), its scheduler, optional persistence, and its real servers.
type Service struct {
	Proto      uint8 // 6 TCP, 17 UDP
	VIP        netip.AddrPort
	Scheduler  string
	Persistent time.Duration
	Reals      []*Real
}

// Real is a real server of a service. Tunnelling (-i) is the only
// forwarding method the director has.
type Real struct {
	Addr   netip.AddrPort
	Weight int
}

// Rules are the virtual services, as ipvsadm manages them.
type Rules struct {
	Services []*Service
}

// Op is an ipvsadm command.
type Op byte

const (
	OpAddService  Op = 'A'
	OpEditService Op = 'E'
	OpDelService  Op = 'D'
	OpAddReal     Op = 'a'
	OpEditReal    Op = 'e'
	OpDelReal     Op = 'd'
	OpClear       Op = 'C'
	OpZero        Op = 'Z'
	OpList        Op = 'L'
	OpSave        Op = 'S'
	OpRestore     Op = 'R'
)

// Command is one parsed ipvsadm command line.
type Command struct {
	Op         Op
	Proto      uint8
	VIP        netip.AddrPort
	HasService bool
	Scheduler  string
	Persistent time.Duration // -p SECS (0: none; -p alone: 300 s as ipvsadm)
	Real       netip.AddrPort
	Weight     int
	HasWeight  bool
	// -L options
	Numeric, Stats, Rate, Conns bool
}

// ParseCommand reads ipvsadm's arguments for the subset the director has.
func ParseCommand(args []string) (Command, error) {
	var c Command
	if len(args) == 0 {
		return c, errors.New("no command (-A -E -D -a -e -d -C -Z -L -S -R)")
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		val := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", a)
			}
			i++
			return args[i], nil
		}
		switch a {
		case "-A", "--add-service", "-E", "--edit-service", "-D", "--delete-service",
			"-a", "--add-server", "-e", "--edit-server", "-d", "--delete-server",
			"-C", "--clear", "-Z", "--zero", "-L", "-l", "--list", "-S", "--save", "-R", "--restore":
			if c.Op != 0 {
				return c, fmt.Errorf("two commands: -%c and %s", c.Op, a)
			}
			c.Op = longOps[a]
		case "-t", "--tcp-service", "-u", "--udp-service":
			v, err := val()
			if err != nil {
				return c, err
			}
			ap, err := parseAddrPort(v)
			if err != nil {
				return c, fmt.Errorf("%s %q: %w", a, v, err)
			}
			c.VIP, c.HasService = ap, true
			c.Proto = 6
			if a == "-u" || a == "--udp-service" {
				c.Proto = 17
			}
		case "-s", "--scheduler":
			v, err := val()
			if err != nil {
				return c, err
			}
			if !contains(lb.Names, v) {
				return c, fmt.Errorf("-s %q: not a scheduler (%s)", v, strings.Join(lb.Names, " | "))
			}
			c.Scheduler = v
		case "-p", "--persistent":
			c.Persistent = 300 * time.Second
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				n, err := strconv.Atoi(args[i+1])
				if err != nil || n < 1 || n > 31536000 {
					return c, fmt.Errorf("-p %q: not a number of seconds", args[i+1])
				}
				c.Persistent = time.Duration(n) * time.Second
				i++
			}
		case "-r", "--real-server":
			v, err := val()
			if err != nil {
				return c, err
			}
			ap, err := parseAddrPort(v)
			if err != nil {
				return c, fmt.Errorf("-r %q: %w", v, err)
			}
			c.Real = ap
		case "-w", "--weight":
			v, err := val()
			if err != nil {
				return c, err
			}
			w, err := strconv.Atoi(v)
			if err != nil || w < 0 || w > 65535 {
				return c, fmt.Errorf("-w %q: not a weight 0..65535", v)
			}
			c.Weight, c.HasWeight = w, true
		case "-i", "--ipip":
			// tunnelling: the director's only method
		case "-g", "--gatewaying", "-m", "--masquerading":
			return c, fmt.Errorf("%s: the director forwards by tunnelling only (-i)", a)
		case "-n", "--numeric":
			c.Numeric = true
		case "--stats":
			c.Stats = true
		case "--rate":
			c.Rate = true
		case "-c", "--connection":
			c.Conns = true
		default:
			return c, fmt.Errorf("unknown option %q", a)
		}
	}
	if c.Op == 0 {
		return c, errors.New("no command (-A -E -D -a -e -d -C -Z -L -S -R)")
	}
	switch c.Op {
	case OpAddService, OpEditService, OpDelService, OpAddReal, OpEditReal, OpDelReal:
		if !c.HasService {
			return c, fmt.Errorf("-%c needs a service (-t or -u VIP:port)", c.Op)
		}
	}
	switch c.Op {
	case OpAddReal, OpEditReal, OpDelReal:
		if !c.Real.IsValid() {
			return c, fmt.Errorf("-%c needs a real server (-r RIP[:port])", c.Op)
		}
	}
	return c, nil
}

var longOps = map[string]Op{
	"-A": OpAddService, "--add-service": OpAddService, "-E": OpEditService, "--edit-service": OpEditService,
	"-D": OpDelService, "--delete-service": OpDelService, "-a": OpAddReal, "--add-server": OpAddReal,
	"-e": OpEditReal, "--edit-server": OpEditReal, "-d": OpDelReal, "--delete-server": OpDelReal,
	"-C": OpClear, "--clear": OpClear, "-Z": OpZero, "--zero": OpZero, "-L": OpList, "-l": OpList,
	"--list": OpList, "-S": OpSave, "--save": OpSave, "-R": OpRestore, "--restore": OpRestore,
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// parseAddrPort reads ADDR:PORT or ADDR (port 0).
func parseAddrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, errors.New("not ADDRESS[:PORT]")
	}
	return netip.AddrPortFrom(a, 0), nil
}

// Find returns the service with that protocol and address.
func (r *Rules) Find(proto uint8, vip netip.AddrPort) *Service {
	for _, s := range r.Services {
		if s.Proto == proto && s.VIP == vip {
			return s
		}
	}
	return nil
}

// Apply makes a change: -A -E -D -a -e -d -C.
func (r *Rules) Apply(c Command) error {
	svc := r.Find(c.Proto, c.VIP)
	name := fmt.Sprintf("%s %s", protoName(c.Proto), c.VIP)
	switch c.Op {
	case OpAddService:
		if svc != nil {
			return fmt.Errorf("service %s exists", name)
		}
		s := &Service{Proto: c.Proto, VIP: c.VIP, Scheduler: c.Scheduler, Persistent: c.Persistent}
		if s.Scheduler == "" {
			s.Scheduler = "wlc" // ipvsadm's default
		}
		r.Services = append(r.Services, s)
	case OpEditService:
		if svc == nil {
			return fmt.Errorf("no service %s", name)
		}
		if c.Scheduler != "" {
			svc.Scheduler = c.Scheduler
		}
		svc.Persistent = c.Persistent
	case OpDelService:
		if svc == nil {
			return fmt.Errorf("no service %s", name)
		}
		for i, s := range r.Services {
			if s == svc {
				r.Services = append(r.Services[:i], r.Services[i+1:]...)
				break
			}
		}
	case OpAddReal, OpEditReal, OpDelReal:
		if svc == nil {
			return fmt.Errorf("no service %s", name)
		}
		real := c.Real
		if real.Port() == 0 {
			real = netip.AddrPortFrom(real.Addr(), c.VIP.Port()) // ipvsadm: the service's port
		}
		idx := -1
		for i, x := range svc.Reals {
			if x.Addr == real {
				idx = i
			}
		}
		switch c.Op {
		case OpAddReal:
			if idx >= 0 {
				return fmt.Errorf("real server %s exists in %s", real, name)
			}
			w := 1
			if c.HasWeight {
				w = c.Weight
			}
			svc.Reals = append(svc.Reals, &Real{Addr: real, Weight: w})
		case OpEditReal:
			if idx < 0 {
				return fmt.Errorf("no real server %s in %s", real, name)
			}
			if c.HasWeight {
				svc.Reals[idx].Weight = c.Weight
			}
		case OpDelReal:
			if idx < 0 {
				return fmt.Errorf("no real server %s in %s", real, name)
			}
			svc.Reals = append(svc.Reals[:idx], svc.Reals[idx+1:]...)
		}
	case OpClear:
		r.Services = nil
	default:
		return fmt.Errorf("-%c changes nothing", c.Op)
	}
	return nil
}

func protoName(p uint8) string {
	if p == 17 {
		return "UDP"
	}
	return "TCP"
}

// Save writes the rules in ipvsadm's save format (ipvsadm -S -n), sorted
// as ipvsadm lists them.
func (r *Rules) Save() string {
	var b strings.Builder
	svcs := append([]*Service(nil), r.Services...)
	sort.SliceStable(svcs, func(i, j int) bool {
		if svcs[i].Proto != svcs[j].Proto {
			return svcs[i].Proto < svcs[j].Proto
		}
		return svcs[i].VIP.Compare(svcs[j].VIP) < 0
	})
	for _, s := range svcs {
		flag := "-t"
		if s.Proto == 17 {
			flag = "-u"
		}
		fmt.Fprintf(&b, "-A %s %s -s %s", flag, s.VIP, s.Scheduler)
		if s.Persistent > 0 {
			fmt.Fprintf(&b, " -p %d", int(s.Persistent/time.Second))
		}
		b.WriteString("\n")
		for _, x := range s.Reals {
			fmt.Fprintf(&b, "-a %s %s -r %s -i -w %d\n", flag, s.VIP, x.Addr, x.Weight)
		}
	}
	return b.String()
}

// Restore applies a save (ipvsadm -R): one command per line; blank lines
// and # comments are skipped. It stops at the first bad line, naming it.
func (r *Rules) Restore(save string) error {
	for n, line := range strings.Split(save, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c, err := ParseCommand(strings.Fields(line))
		if err == nil {
			err = r.Apply(c)
		}
		if err != nil {
			return fmt.Errorf("line %d %q: %w", n+1, line, err)
		}
	}
	return nil
}
