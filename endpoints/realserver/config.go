package realserver

import (
	"fmt"
	"net/netip"

	"github.com/tunbond/tunbond/endpoints/config"
	"github.com/tunbond/tunbond/endpoints/host"
	"github.com/tunbond/tunbond/tunnel/encap"

	"github.com/spf13/pflag"
)

// FileConfig is `tunbond realserver --config FILE`.
type FileConfig struct {
	TUN struct {
		Name string `mapstructure:"name"`
	} `mapstructure:"tun"`
	Local     string   `mapstructure:"local"`
	Directors []string `mapstructure:"directors"`
	VIPs      []string `mapstructure:"vips"`
	Encap     string   `mapstructure:"encap"`
	Key       int64    `mapstructure:"key"`
	Metrics   struct {
		Listen string `mapstructure:"listen"`
	} `mapstructure:"metrics"`
}

var defaults = map[string]any{"tun.name": "vip0", "local": "", "encap": "ipip", "key": 0, "metrics.listen": ""}

// Flags declares the flags of `tunbond realserver`.
func Flags(fs *pflag.FlagSet) {
	fs.String("config", "", "YAML config file")
	fs.String("local", "", "the address the directors send to (local)")
	fs.Bool("check", false, "say what on this host would stop it from serving the VIPs, and exit")
}

// LoadConfig reads and checks the agent's config; errors name the key.
func LoadConfig(file string, fs *pflag.FlagSet) (*Config, *FileConfig, error) {
	var f FileConfig
	if err := config.Load(file, fs, defaults, map[string]string{"local": "local"}, &f, nil); err != nil {
		return nil, nil, err
	}
	var errs config.Problems
	bad := errs.Add
	errs.InterfaceName("tun.name", f.TUN.Name)
	c := &Config{TUN: f.TUN.Name}
	var err error
	if c.Local, err = netip.ParseAddr(f.Local); err != nil || !c.Local.Is4() {
		bad("local", "%q is not an IPv4 address (where the directors send)", f.Local)
	}
	if len(f.Directors) == 0 {
		bad("directors", "at least one director address: packets are accepted only from them")
	}
	for i, d := range f.Directors {
		a, err := netip.ParseAddr(d)
		if err != nil || !a.Is4() {
			bad(fmt.Sprintf("directors[%d]", i), "%q is not an IPv4 address", d)
		}
		c.Directors = append(c.Directors, a)
	}
	if len(f.VIPs) == 0 {
		bad("vips", "at least one VIP to serve")
	}
	for i, v := range f.VIPs {
		a, err := netip.ParseAddr(v)
		if err != nil {
			bad(fmt.Sprintf("vips[%d]", i), "%q is not an address", v)
		}
		c.VIPs = append(c.VIPs, a)
	}
	e, err := encap.Parse(f.Encap, uint32(f.Key), false)
	if err != nil {
		bad("encap", "%v", err)
	}
	if f.Key < 0 || f.Key > 1<<32-1 {
		bad("key", "%d out of range", f.Key)
	}
	c.Encap = e
	return c, &f, errs.Err()
}

// Check says, in plain words, what on the host (the namespace h runs in)
// would stop this agent, or a kernel real server, from serving the VIPs.
// It returns one line per problem; none means ready. It changes nothing.
func Check(c *Config, h host.Host) []string {
	var out []string
	sysctl := func(key string) string {
		v, _ := h.Sysctl("net.ipv4." + key)
		return v
	}
	if _, _, err := h.LinkByAddr(c.Local); err != nil {
		out = append(out, fmt.Sprintf("the local address %v is not on this host: the directors' packets will not arrive", c.Local))
	}
	if _, err := h.Link("tunl0"); err == nil {
		out = append(out, "the kernel's ipip module is loaded (tunl0 exists): it takes the directors' IPIP packets too; either use it (VIP on lo, tunl0 up) or unload it for the agent")
	}
	// A VIP on a real interface answers ARP for it: it must not.
	for _, v := range c.VIPs {
		l, _, err := h.LinkByAddr(v)
		if err != nil || l.Name == "lo" || l.Name == c.TUN {
			continue
		}
		if sysctl("conf.all.arp_ignore") != "1" || sysctl("conf.all.arp_announce") != "2" {
			out = append(out, fmt.Sprintf("the VIP %v is on %s, a real interface: set net.ipv4.conf.all.arp_ignore=1 and arp_announce=2, or this host will answer ARP for the VIP and steal the director's traffic", v, l.Name))
		}
	}
	return out
}
