package director

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tunbond/tunbond/endpoints/config"
	"github.com/tunbond/tunbond/scheduler/lb"
	"github.com/tunbond/tunbond/tunnel/encap"

	"github.com/spf13/pflag"
)

// Config is `tunbond director --config FILE`. A config with only the TUN
// and the admin socket starts a director with no services, for
// `tunbond adm` to fill.
type Config struct {
	TUN struct {
		Name string `mapstructure:"name"`
	} `mapstructure:"tun"`
	// Ingress is how the clients' packets reach the director: tun (the
	// VIPs routed to the TUN, a read per packet) or ring (a PACKET_MMAP
	// ring on every interface, the VIPs routed to a blackhole).
	Ingress          string `mapstructure:"ingress"`
	Local            string `mapstructure:"local"`
	Encap            string `mapstructure:"encap"`
	Key              int64  `mapstructure:"key"`
	MTU              int    `mapstructure:"mtu"`
	Connections      int    `mapstructure:"connections"`
	ExpireNodestConn bool   `mapstructure:"expire_nodest_conn"`
	Timeouts         struct {
		TCP    time.Duration `mapstructure:"tcp"`
		TCPFin time.Duration `mapstructure:"tcpfin"`
		UDP    time.Duration `mapstructure:"udp"`
	} `mapstructure:"timeouts"`
	Check struct {
		Type     string        `mapstructure:"type"`
		Path     string        `mapstructure:"path"`
		Interval time.Duration `mapstructure:"interval"`
		Timeout  time.Duration `mapstructure:"timeout"`
		Rise     int           `mapstructure:"rise"`
		Fall     int           `mapstructure:"fall"`
	} `mapstructure:"check"`
	Services []ServiceConfig `mapstructure:"services"`
	// BGP, when set (asn not 0), announces each VIP with a healthy real
	// server to the peers: several directors share a VIP by ECMP.
	BGP     BGPConfig `mapstructure:"bgp"`
	Metrics struct {
		Listen string `mapstructure:"listen"`
	} `mapstructure:"metrics"`
	Control struct {
		Socket string `mapstructure:"socket"`
	} `mapstructure:"control"`
}

// ServiceConfig is one virtual service.
type ServiceConfig struct {
	Proto      string        `mapstructure:"proto"`
	VIP        string        `mapstructure:"vip"`
	Scheduler  string        `mapstructure:"scheduler"`
	Persistent time.Duration `mapstructure:"persistent"`
	Reals      []RealConfig  `mapstructure:"reals"`
}

// RealConfig is one real server.
type RealConfig struct {
	Address string `mapstructure:"address"`
	Weight  int    `mapstructure:"weight"`
}

var configDefaults = map[string]any{
	"tun.name": "vs0", "ingress": "tun", "local": "", "encap": "ipip", "key": 0, "mtu": 0, "connections": 1 << 20,
	"expire_nodest_conn": false, "timeouts.tcp": "900s", "timeouts.tcpfin": "120s", "timeouts.udp": "300s",
	"check.type": "tcp", "check.path": "/", "check.interval": "2s", "check.timeout": "1s", "check.rise": 2, "check.fall": 3,
	"metrics.listen": "", "control.socket": DefaultAdminSocket,
	"bgp.asn": 0, "bgp.router_id": "", "bgp.next_hop": "",
}

// BGP peer defaults: a router drops a silent director's routes after 9 s
// (keepalives every 3 s), on port 179.
const (
	defaultBGPHold = 9 * time.Second
	defaultBGPPort = 179
)

// Flags declares the flags that override the main keys.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file")
	fs.String("local", "", "the director's address towards the real servers (local)")
	fs.String("tun-name", "", "TUN the VIPs are routed to (tun.name)")
	fs.String("metrics-listen", "", "Prometheus listen address (metrics.listen)")
	fs.String("control-socket", "", "admin socket (control.socket)")
}

var configFlags = map[string]string{"local": "local", "tun-name": "tun.name", "metrics-listen": "metrics.listen", "control-socket": "control.socket"}

// LoadConfig reads and checks a director config; errors name the key.
func LoadConfig(file string, fs *pflag.FlagSet) (*Config, error) {
	var c Config
	if err := config.Load(file, fs, configDefaults, configFlags, &c, func(v config.Settings) {
		// A real server without a weight has weight 1.
		if svcs, ok := v.Get("services").([]any); ok {
			for _, s := range svcs {
				if m, ok := s.(map[string]any); ok {
					reals, _ := m["reals"].([]any)
					config.DefaultEach(reals, "weight", 1)
				}
			}
			v.Set("services", svcs)
		}
	}); err != nil {
		return nil, err
	}
	return &c, c.Validate()
}

// Validate checks every value, naming the key.
func (c *Config) Validate() error {
	var errs config.Problems
	bad := errs.Add
	errs.InterfaceName("tun.name", c.TUN.Name)
	if c.Ingress != "tun" && c.Ingress != "ring" {
		bad("ingress", "%q is not tun or ring", c.Ingress)
	}
	if a, err := netip.ParseAddr(c.Local); err != nil || !a.Is4() {
		bad("local", "%q is not an IPv4 address (the director's address towards the real servers)", c.Local)
	}
	if _, err := encap.Parse(c.Encap, uint32(c.Key), false); err != nil {
		bad("encap", "%v", err)
	}
	if c.Key < 0 || c.Key > 1<<32-1 {
		bad("key", "%d out of range 0..4294967295", c.Key)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		bad("mtu", "%d out of range (0 = the interface's, or 576..65535)", c.MTU)
	}
	if c.Connections < 1 || c.Connections > 1<<26 {
		bad("connections", "%d out of range 1..67108864", c.Connections)
	}
	for k, d := range map[string]time.Duration{"timeouts.tcp": c.Timeouts.TCP, "timeouts.tcpfin": c.Timeouts.TCPFin, "timeouts.udp": c.Timeouts.UDP} {
		if d < time.Second {
			bad(k, "%v is less than a second", d)
		}
	}
	switch c.Check.Type {
	case "none", "tcp", "http":
	default:
		bad("check.type", "%q is not none, tcp or http", c.Check.Type)
	}
	if c.Check.Interval < 10*time.Millisecond || c.Check.Timeout <= 0 || c.Check.Timeout > c.Check.Interval*10 {
		bad("check.interval", "interval %v / timeout %v do not make sense", c.Check.Interval, c.Check.Timeout)
	}
	if c.Check.Rise < 1 || c.Check.Fall < 1 {
		bad("check.rise", "rise %d and fall %d must be at least 1", c.Check.Rise, c.Check.Fall)
	}
	if _, err := c.Rules(); err != nil {
		errs = append(errs, err)
	}
	c.validateBGP(bad)
	return errs.Err()
}

// validateBGP checks the bgp section (none: no speaker) and fills the
// peers' defaults.
func (c *Config) validateBGP(bad func(key, format string, a ...any)) {
	b := &c.BGP
	if b.ASN == 0 {
		if b.RouterID != "" || len(b.Peers) > 0 {
			bad("bgp.asn", "missing (the director's AS number) while bgp has other keys")
		}
		return
	}
	if a, err := netip.ParseAddr(b.RouterID); err != nil || !a.Is4() {
		bad("bgp.router_id", "%q is not an IPv4 address (a BGP router id)", b.RouterID)
	}
	if b.NextHop != "" {
		if _, err := netip.ParseAddr(b.NextHop); err != nil {
			bad("bgp.next_hop", "%q is not an address", b.NextHop)
		}
	}
	if len(b.Peers) == 0 {
		bad("bgp.peers", "at least one peer is needed")
	}
	for i := range b.Peers {
		p := &b.Peers[i]
		key := func(f string) string { return fmt.Sprintf("bgp.peers[%d].%s", i, f) }
		if _, err := netip.ParseAddr(p.Address); err != nil {
			bad(key("address"), "%q is not an address", p.Address)
		}
		if p.ASN == 0 {
			bad(key("asn"), "missing")
		}
		if p.Local != "" {
			if _, err := netip.ParseAddr(p.Local); err != nil {
				bad(key("local"), "%q is not an address", p.Local)
			}
		}
		if p.HoldTime == 0 {
			p.HoldTime = defaultBGPHold
		}
		if p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second {
			bad(key("hold_time"), "%v out of range 3s..65535s (RFC 4271)", p.HoldTime)
		}
		if p.Port == 0 {
			p.Port = defaultBGPPort
		}
		if p.Port < 1 || p.Port > 65535 {
			bad(key("port"), "%d out of range 1..65535", p.Port)
		}
	}
}

// Rules renders the configured services as an ipvsadm save.
func (c *Config) Rules() (string, error) {
	var b strings.Builder
	for i, s := range c.Services {
		key := func(f string) string { return fmt.Sprintf("services[%d].%s", i, f) }
		flag := map[string]string{"tcp": "-t", "udp": "-u"}[s.Proto]
		if flag == "" {
			return "", fmt.Errorf("config: %s: %q is not tcp or udp", key("proto"), s.Proto)
		}
		if _, err := parseAddrPort(s.VIP); err != nil {
			return "", fmt.Errorf("config: %s: %q is not ADDRESS[:PORT]", key("vip"), s.VIP)
		}
		sched := s.Scheduler
		if sched == "" {
			sched = "wlc"
		}
		if _, err := lb.New(sched, nil); err != nil {
			return "", fmt.Errorf("config: %s: %v", key("scheduler"), err)
		}
		fmt.Fprintf(&b, "-A %s %s -s %s", flag, s.VIP, sched)
		if s.Persistent > 0 {
			fmt.Fprintf(&b, " -p %d", max(1, int(s.Persistent/time.Second)))
		}
		b.WriteString("\n")
		for j, r := range s.Reals {
			if _, err := parseAddrPort(r.Address); err != nil {
				return "", fmt.Errorf("config: %s: %q is not ADDRESS[:PORT]", key(fmt.Sprintf("reals[%d].address", j)), r.Address)
			}
			if r.Weight < 0 || r.Weight > 65535 {
				return "", fmt.Errorf("config: %s: %d out of range 0..65535", key(fmt.Sprintf("reals[%d].weight", j)), r.Weight)
			}
			fmt.Fprintf(&b, "-a %s %s -r %s -i -w %d\n", flag, s.VIP, r.Address, r.Weight)
		}
	}
	check := &Rules{}
	if err := check.Restore(b.String()); err != nil {
		return "", fmt.Errorf("config: services: %w", err)
	}
	return b.String(), nil
}

// RunConfig is the runtime setup the config describes (the admin socket
// included; metrics.listen is the command's).
func (c *Config) RunConfig() RunConfig {
	e, _ := encap.Parse(c.Encap, uint32(c.Key), false)
	rules, _ := c.Rules()
	t := DefaultTimeouts
	t[StateEstablished], t[StateFinWait], t[StateUDP] = c.Timeouts.TCP, c.Timeouts.TCPFin, c.Timeouts.UDP
	var bgp *BGPConfig
	if c.BGP.ASN != 0 {
		b := c.BGP
		bgp = &b
	}
	return RunConfig{TUN: c.TUN.Name, Ingress: c.Ingress, Local: netip.MustParseAddr(c.Local), Encap: e, BGP: bgp,
		MTU: c.MTU, Connections: c.Connections, Timeouts: t, ExpireNoDest: c.ExpireNodestConn, Rules: rules, AdminSocket: c.Control.Socket,
		Check: Check{Type: c.Check.Type, Path: c.Check.Path, Interval: c.Check.Interval, Timeout: c.Check.Timeout, Rise: c.Check.Rise, Fall: c.Check.Fall}}
}
