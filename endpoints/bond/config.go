package bond

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tunbond/tunbond/endpoints/config"
	"github.com/tunbond/tunbond/scheduler/path"
	"github.com/tunbond/tunbond/tunnel/conn"
	"github.com/tunbond/tunbond/tunnel/encap"
	"github.com/tunbond/tunbond/tunnel/header"
	"github.com/tunbond/tunbond/tunnel/session"

	"github.com/spf13/pflag"
)

// Config is the bond endpoint's configuration (one YAML file, TUNBOND_*
// environment variables, flags).
type Config struct {
	// Mode is l3 (a TUN: IP packets) or l2 (a TAP: Ethernet frames, GRE
	// protocol type 0x6558, bridged to the LAN).
	Mode string `mapstructure:"mode"`
	TAP  struct {
		Name   string `mapstructure:"name"`
		Bridge string `mapstructure:"bridge"` // an existing bridge to enslave the TAP to; "": none
		MTU    int    `mapstructure:"mtu"`
	} `mapstructure:"tap"`
	TUN struct {
		Name    string `mapstructure:"name"`
		Address string `mapstructure:"address"`
		MTU     int    `mapstructure:"mtu"`
	} `mapstructure:"tun"`
	Encap     string `mapstructure:"encap"`
	Key       int64  `mapstructure:"key"`
	Checksum  bool   `mapstructure:"checksum"`
	Scheduler string `mapstructure:"scheduler"`
	BatchSize int    `mapstructure:"batch_size"`
	Reorder   struct {
		Window    int           `mapstructure:"window"`
		Timeout   time.Duration `mapstructure:"timeout"`
		LossGrace time.Duration `mapstructure:"loss_grace"`
		Adaptive  bool          `mapstructure:"adaptive"`
		Repair    bool          `mapstructure:"repair"`
	} `mapstructure:"reorder"`
	Keepalive struct {
		Interval time.Duration `mapstructure:"interval"`
		Misses   int           `mapstructure:"misses"`
	} `mapstructure:"keepalive"`
	Auth         AuthFileConfig   `mapstructure:"auth"`
	Redundancy   RedundancyConfig `mapstructure:"redundancy"`
	Routing      string           `mapstructure:"routing"`
	RouteTable   int              `mapstructure:"route_table"`
	RulePriority int              `mapstructure:"rule_priority"`
	Paths        []PathConfig     `mapstructure:"paths"`
	Metrics      struct {
		Listen string `mapstructure:"listen"`
	} `mapstructure:"metrics"`
	Control struct {
		Socket string `mapstructure:"socket"`
	} `mapstructure:"control"`
}

// AuthFileConfig is the auth section: the key both ends share and what
// the sessions it keys do.
type AuthFileConfig struct {
	KeyFile        string   `mapstructure:"key_file"`        // "": no auth
	Encrypt        bool     `mapstructure:"encrypt"`         // encrypt inner packets too
	AllowedSources []string `mapstructure:"allowed_sources"` // inner source prefixes accepted from the peer; empty: any
}

// Path transports.
const (
	TransportGRE = "gre" // raw IP, protocol 47
	TransportUDP = "udp" // GRE-in-UDP (RFC 8086)
)

// PathConfig is one uplink.
type PathConfig struct {
	Name      string `mapstructure:"name"`
	Transport string `mapstructure:"transport"` // gre | udp
	Port      int    `mapstructure:"port"`      // udp: the port both ends use (RFC 8086's 4754)
	Local     string `mapstructure:"local"`
	Remote    string `mapstructure:"remote"`
	Device    string `mapstructure:"device"`
	Gateway   string `mapstructure:"gateway"`
	Weight    int64  `mapstructure:"weight"`
	// Ceiling caps the adaptive scheduler's rate on the path, in tc's
	// words (20mbit, 500kbit, 1gbit): a metered or capped link. "": none.
	Ceiling string `mapstructure:"ceiling"`
}

// PathDefaults is what a path gets for the keys it does not set: weight
// 1 (0 means "carry nothing"), transport gre, port 4754 (RFC 8086).
func PathDefaults() PathConfig {
	return PathConfig{Weight: 1, Transport: TransportGRE, Port: conn.DefaultUDPPort}
}

// ParseRate reads a rate in tc's words (bit, kbit, mbit, gbit; a bare
// number is bit/s) as bits per second.
func ParseRate(s string) (float64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*mult > 1e12 {
		return 0, fmt.Errorf("%q is not a rate (like 20mbit, 500kbit, 1gbit)", s)
	}
	return v * mult, nil
}

// DefaultControlSocket is where the endpoint listens for `tunbond ctl`.
const DefaultControlSocket = "/run/tunbond/endpoint.sock"

var defaults = map[string]any{
	"mode":            ModeL3,
	"tap.name":        "tap0",
	"tap.bridge":      "",
	"tap.mtu":         0,
	"tun.name":        "bond0",
	"tun.address":     "",
	"tun.mtu":         0,
	"encap":           "gre",
	"key":             0,
	"checksum":        false,
	"scheduler":       "adaptive",
	"batch_size":      64,
	"reorder.window":  4096,
	"reorder.timeout": "50ms",
	// The lab's measurements ran with these two; a user gets them too.
	"reorder.loss_grace":   "1ms",
	"reorder.adaptive":     true,
	"reorder.repair":       false, // opt-in: see README (Repair) for what it costs and when it pays
	"keepalive.interval":   "200ms",
	"keepalive.misses":     3,
	"auth.key_file":        "",
	"auth.encrypt":         false,
	"auth.allowed_sources": []string{},
	"redundancy.max_size":  0,
	"redundancy.dscp":      []string{},
	"redundancy.tcp_flags": []string{},
	"routing":              "none",
	"route_table":          7700,
	"rule_priority":        7700,
	"metrics.listen":       "",
	"control.socket":       DefaultControlSocket,
}

// EndpointFlags declares the flags that override the main keys.
func EndpointFlags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file")
	fs.String("tun-name", "", "TUN device name (tun.name)")
	fs.String("tun-address", "", "TUN address/prefix (tun.address)")
	fs.String("encap", "", "gre | ipip (encap)")
	fs.String("scheduler", "", "adaptive | rr | wrr | flowhash | delay (scheduler)")
	fs.String("routing", "", "manage | none (routing)")
	fs.String("metrics-listen", "", "Prometheus listen address (metrics.listen)")
	fs.String("control-socket", "", "control socket path (control.socket)")
}

var flagKeys = map[string]string{
	"tun-name": "tun.name", "tun-address": "tun.address", "encap": "encap", "scheduler": "scheduler",
	"routing": "routing", "metrics-listen": "metrics.listen", "control-socket": "control.socket",
}

// LoadConfig reads the file, then TUNBOND_* variables, then the flags that
// were set; it rejects unknown keys and bad values, naming the key.
func LoadConfig(file string, fs *pflag.FlagSet) (*Config, error) {
	var c Config
	if err := config.Load(file, fs, defaults, flagKeys, &c, func(v config.Settings) {
		// A path without a weight has weight 1 (0 means "carry nothing").
		if paths, ok := v.Get("paths").([]any); ok {
			d := PathDefaults()
			config.DefaultEach(paths, "weight", d.Weight)
			config.DefaultEach(paths, "transport", d.Transport)
			config.DefaultEach(paths, "port", d.Port)
			v.Set("paths", paths)
		}
	}); err != nil {
		return nil, err
	}
	if err := c.pathEnv(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// Defaults is the config a file that sets nothing gets (with the
// TUNBOND_* variables applied), before paths and the TUN address are added:
// what the lab builds its endpoints from, so it measures what users run.
// It is not validated (it has no paths yet).
func Defaults() (*Config, error) {
	var c Config
	if err := config.Load("", nil, defaults, nil, &c, nil); err != nil {
		return nil, err
	}
	return &c, nil
}

// pathEnv applies TUNBOND_PATHS_<NAME>_<FIELD> overrides (the list itself
// comes from the file): e.g. TUNBOND_PATHS_LTE_WEIGHT=10.
func (c *Config) pathEnv() error {
	for i := range c.Paths {
		p := &c.Paths[i]
		prefix := "TUNBOND_PATHS_" + strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(p.Name)) + "_"
		for _, f := range []struct {
			name string
			s    *string
		}{{"LOCAL", &p.Local}, {"REMOTE", &p.Remote}, {"DEVICE", &p.Device}, {"GATEWAY", &p.Gateway}} {
			if v, ok := os.LookupEnv(prefix + f.name); ok {
				*f.s = v
			}
		}
		if v, ok := os.LookupEnv(prefix + "WEIGHT"); ok {
			w, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("config: %sWEIGHT (paths[%d].weight): %q is not a number", prefix, i, v)
			}
			p.Weight = w
		}
	}
	return nil
}

// Validate checks every value and names the key that is wrong.
func (c *Config) Validate() error {
	var errs config.Problems
	bad := errs.Add
	switch c.Mode {
	case ModeL3:
		errs.InterfaceName("tun.name", c.TUN.Name)
		if c.TUN.Address == "" {
			bad("tun.address", "missing (an address with prefix, like 10.77.0.1/30)")
		} else if _, err := netip.ParsePrefix(c.TUN.Address); err != nil {
			bad("tun.address", "%q is not an address with prefix (like 10.77.0.1/30)", c.TUN.Address)
		}
		if c.TUN.MTU != 0 && (c.TUN.MTU < 576 || c.TUN.MTU > 65535-64) {
			bad("tun.mtu", "%d out of range (0 = from the uplinks, or 576..65471)", c.TUN.MTU)
		}
	case ModeL2:
		errs.InterfaceName("tap.name", c.TAP.Name)
		if c.TAP.Bridge != "" {
			errs.InterfaceName("tap.bridge", c.TAP.Bridge)
		}
		if c.TAP.MTU != 0 && (c.TAP.MTU < 576 || c.TAP.MTU > 65535-64) {
			bad("tap.mtu", "%d out of range (0 = from the uplinks, or 576..65471)", c.TAP.MTU)
		}
		if c.TUN.Address != "" {
			bad("tun.address", "not used in mode l2: the TAP carries frames; give the LAN's addresses to the bridge or its hosts")
		}
		if c.Encap != "gre" {
			bad("mode", "l2 carries Ethernet frames in GRE (protocol type 0x6558); encap %s cannot", c.Encap)
		}
	default:
		bad("mode", "%q is not l3 or l2", c.Mode)
	}
	if c.Key < 0 || c.Key > 1<<32-1 {
		bad("key", "%d out of range 0..4294967295", c.Key)
	}
	enc, err := encap.Parse(c.Encap, uint32(c.Key), c.Checksum)
	if err != nil {
		bad("encap", "%v", err)
	}
	if _, err := path.New(c.Scheduler, path.NewPaths(nil)); err != nil {
		bad("scheduler", "%v", err)
	}
	if c.BatchSize < 1 || c.BatchSize > 1024 {
		bad("batch_size", "%d out of range 1..1024", c.BatchSize)
	}
	if c.Reorder.Window < 1 || c.Reorder.Window > 1<<20 {
		bad("reorder.window", "%d out of range 1..1048576", c.Reorder.Window)
	}
	if c.Reorder.Timeout <= 0 || c.Reorder.Timeout > 10*time.Second {
		bad("reorder.timeout", "%v out of range (0, 10s]", c.Reorder.Timeout)
	}
	if c.Reorder.LossGrace < 0 || c.Reorder.LossGrace > c.Reorder.Timeout {
		bad("reorder.loss_grace", "%v out of range 0..reorder.timeout", c.Reorder.LossGrace)
	}
	if c.Keepalive.Interval < 10*time.Millisecond || c.Keepalive.Interval > time.Minute {
		bad("keepalive.interval", "%v out of range 10ms..1m", c.Keepalive.Interval)
	}
	if c.Keepalive.Misses < 1 || c.Keepalive.Misses > 100 {
		bad("keepalive.misses", "%d out of range 1..100", c.Keepalive.Misses)
	}
	if _, problems := c.Redundancy.compile(); len(problems) > 0 {
		for _, p := range problems {
			key, msg, _ := strings.Cut(p, ": ")
			bad(key, "%s", msg)
		}
	}
	if c.Routing != "manage" && c.Routing != "none" {
		bad("routing", "%q is not manage or none", c.Routing)
	}
	if c.RouteTable < 1 || c.RouteTable > 1<<31-1000 {
		bad("route_table", "%d is not a free table number", c.RouteTable)
	} else if last := c.RouteTable + max(len(c.Paths), 1) - 1; c.RouteTable <= 255 && last >= 253 {
		// Path i uses table route_table+i: none may be the kernel's default (253), main (254) or local (255).
		bad("route_table", "%d..%d (one table per path) takes in the kernel's tables 253..255; start at 256 or above, or end below 253", c.RouteTable, last)
	}
	if c.RulePriority < 1 || c.RulePriority > 32765 {
		bad("rule_priority", "%d out of range 1..32765", c.RulePriority)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port", c.Metrics.Listen)
		}
	}
	if len(c.Paths) == 0 {
		bad("paths", "at least one path is needed")
	}
	if len(c.Paths) > 64 {
		bad("paths", "%d paths; at most 64", len(c.Paths))
	}
	auth := c.Auth.KeyFile != ""
	if auth {
		if _, err := session.ReadKeyFile(c.Auth.KeyFile); err != nil {
			bad("auth.key_file", "%v", err)
		}
		if c.Encap != "gre" {
			bad("auth.key_file", "auth seals GRE packets; encap %s cannot carry them", c.Encap)
		}
		if c.Checksum {
			bad("checksum", "a sealed packet has no GRE checksum (its tag covers more); drop checksum with auth")
		}
	} else if c.Auth.Encrypt {
		bad("auth.encrypt", "needs auth.key_file")
	}
	if _, err := c.AllowedSources(); err != nil {
		bad("auth.allowed_sources", "%v", err)
	} else if len(c.Auth.AllowedSources) > 0 && !auth {
		bad("auth.allowed_sources", "needs auth.key_file: without auth any inner source can be forged")
	}
	names := map[string]bool{}
	pairs := map[[2]netip.Addr]bool{}
	udpLocals := map[netip.AddrPort]bool{}
	weight := uint64(0)
	for i, p := range c.Paths {
		key := func(f string) string { return fmt.Sprintf("paths[%d].%s", i, f) }
		if p.Name == "" {
			bad(key("name"), "missing")
		} else if names[p.Name] {
			bad(key("name"), "%q used twice", p.Name)
		}
		names[p.Name] = true
		local, err1 := netip.ParseAddr(p.Local)
		switch {
		case p.Local == "" && p.Device != "":
			err1 = errNoLocal // the device's address, followed as it changes
		case p.Local == "":
			bad(key("local"), "missing (an IPv4 or IPv6 address; or name only the device, and its address is used)")
		case err1 != nil || local.Zone() != "" || local.IsLinkLocalUnicast() || local.IsUnspecified() || local.IsMulticast():
			bad(key("local"), "%q is not a unicast IPv4 or IPv6 address (link-local addresses are not supported)", p.Local)
			err1 = errNoLocal
		}
		udp := p.Transport == TransportUDP
		switch p.Transport {
		case TransportGRE:
		case TransportUDP, TransportAuto:
			if c.Encap != "gre" {
				bad(key("transport"), "udp carries GRE (RFC 8086); encap %s cannot go in it", c.Encap)
			}
			if p.Port < 1 || p.Port > 65535 {
				bad(key("port"), "%d out of range 1..65535", p.Port)
			} else if err1 == nil {
				lp := netip.AddrPortFrom(local, uint16(p.Port))
				if udpLocals[lp] {
					bad(key("port"), "local %v is another udp path's too; give one of them another port", lp)
				}
				udpLocals[lp] = true
			}
		default:
			bad(key("transport"), "%q is not gre, udp or auto", p.Transport)
		}
		remote, err2 := netip.ParseAddr(p.Remote)
		switch {
		case p.Remote == "" && udp && auth:
			err2 = errNoRemote // learned from the peer's authenticated packets
		case p.Remote == "" && udp:
			bad(key("remote"), "missing; a udp path may leave it out only with auth (it is then learned from authenticated packets)")
		case err2 != nil || remote.Zone() != "" || remote.IsUnspecified() || remote.IsMulticast():
			bad(key("remote"), "%q is not a unicast IPv4 or IPv6 address", p.Remote)
			err2 = errNoRemote
		case err1 == nil && local.Is4() != remote.Is4():
			bad(key("remote"), "%v and local %v are of different families", remote, local)
		}
		v6 := err1 == nil && local.Is6() || err2 == nil && remote.Is6()
		if v6 && c.Encap != "gre" {
			bad(key("remote"), "an IPv6 path carries GRE (RFC 7676); encap %s over IPv6 is not supported", c.Encap)
		}
		if p.Gateway != "" {
			if g, err := netip.ParseAddr(p.Gateway); err != nil || (err1 == nil && g.Is4() != local.Is4()) {
				bad(key("gateway"), "%q is not an address of the path's family", p.Gateway)
			}
		}
		if err1 == nil && err2 == nil && !udp {
			if pairs[[2]netip.Addr{local, remote}] {
				bad(key("remote"), "local %v and remote %v are the same as another path's", local, remote)
			}
			pairs[[2]netip.Addr{local, remote}] = true
		}
		if p.Ceiling != "" {
			if _, err := ParseRate(p.Ceiling); err != nil {
				bad(key("ceiling"), "%v", err)
			}
		}
		if p.Weight < 0 || p.Weight > 1<<20 {
			bad(key("weight"), "%d out of range 0..1048576", p.Weight)
		} else {
			weight += uint64(p.Weight)
		}
	}
	if len(c.Paths) > 0 && weight == 0 {
		bad("paths[*].weight", "every weight is 0; at least one path must carry traffic")
	}
	if _, ipip := enc.(encap.IPIP); ipip && c.Checksum {
		bad("checksum", "only GRE has a checksum")
	}
	if enc != nil && !enc.Sequenced() && c.Scheduler == "adaptive" {
		bad("scheduler", "adaptive (the default) learns the paths from the receiver's feedback, which needs sequence numbers: "+
			"encap %s has none, so the far end cannot reorder either; use scheduler: flowhash", c.Encap)
	}
	return errs.Err()
}

// errNoRemote marks a path whose remote is learned (or wrong: reported);
// errNoLocal one whose local address is its device's (or wrong).
var (
	errNoRemote = errors.New("no remote")
	errNoLocal  = errors.New("no local")
)

// AllowedSources parses auth.allowed_sources.
func (c *Config) AllowedSources() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Auth.AllowedSources {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a prefix (like 10.1.0.0/16 or 2001:db8::/32)", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Modes.
const (
	ModeL3 = "l3" // a TUN: IP packets
	ModeL2 = "l2" // a TAP: Ethernet frames
)

// Encapsulation returns the bond's encapsulation (GRE carrying frames in
// mode l2).
func (c *Config) Encapsulation() encap.Encapsulation {
	e, _ := encap.Parse(c.Encap, uint32(c.Key), c.Checksum)
	if g, ok := e.(encap.GRE); ok && c.Mode == ModeL2 {
		g.Frames = true
		return g
	}
	return e
}

// pathOverhead is what path i adds to an inner packet on the wire: outer
// IP header (IPv4's 20 bytes, IPv6's 40), UDP header for a udp path, GRE
// header, and with auth the sealed header and tag.
func (c *Config) pathOverhead(i int) int {
	n := c.Encapsulation().Overhead()
	local, _ := netip.ParseAddr(c.Paths[i].Local)
	remote, _ := netip.ParseAddr(c.Paths[i].Remote)
	if local.Is6() || remote.Is6() {
		n += header.IPv6HeaderLen - header.IPv4HeaderLen
	}
	if t := c.Paths[i].Transport; t == TransportUDP || t == TransportAuto {
		n += 8 // auto: room for UDP's header, in case it falls back
	}
	if c.Auth.KeyFile != "" {
		n += header.SealedOverhead
	}
	return n
}
