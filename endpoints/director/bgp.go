package director

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
	apb "google.golang.org/protobuf/types/known/anypb"
)

// BGPConfig is director.yaml's bgp section: an embedded BGP speaker
// (gobgp) that announces each VIP with at least one healthy real server as
// a /32 (/128), so several directors share a VIP by the router's ECMP.
type BGPConfig struct {
	ASN      uint32          `mapstructure:"asn"`
	RouterID string          `mapstructure:"router_id"`
	NextHop  string          `mapstructure:"next_hop"` // "": the director's address on each session (next hop self)
	Peers    []BGPPeerConfig `mapstructure:"peers"`
}

// BGPPeerConfig is one router the director peers with.
type BGPPeerConfig struct {
	Address  string        `mapstructure:"address"`
	ASN      uint32        `mapstructure:"asn"`
	HoldTime time.Duration `mapstructure:"hold_time"` // the router drops the director's routes this long after it goes silent
	Port     int           `mapstructure:"port"`      // the peer's BGP port (179)
	Local    string        `mapstructure:"local"`     // the director's address for the session; "": the kernel's choice
}

// BGPPeerState is one peer as `tunbond adm --bgp` and the metrics show it.
type BGPPeerState struct {
	Address   string
	ASN       uint32
	State     string // idle, connect, active, opensent, openconfirm, established
	Up        bool
	Announced int // prefixes the peer has from us
	Uptime    time.Duration
}

// Speaker is the director's BGP speaker. Announce sets what is announced;
// Stop withdraws everything and closes the sessions.
type Speaker struct {
	s       *server.BgpServer
	cfg     BGPConfig
	log     *slog.Logger
	mu      sync.Mutex
	current map[netip.Addr]bool // announced now
	stopped bool                // Stop began: nothing is announced any more
}

// StartSpeaker starts the speaker with its peers (it listens on no port:
// it connects to its peers, as a router expects of a route server's
// clients; a router may connect too).
func StartSpeaker(ctx context.Context, cfg BGPConfig, log *slog.Logger) (*Speaker, error) {
	sp := &Speaker{cfg: cfg, log: log, current: map[netip.Addr]bool{}}
	sp.s = server.NewBgpServer(server.LoggerOption(slogLogger{log}))
	go sp.s.Serve()
	if err := sp.s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID, ListenPort: -1}}); err != nil {
		sp.s.Stop()
		return nil, fmt.Errorf("bgp: %w", err)
	}
	for i, p := range cfg.Peers {
		hold := uint64(p.HoldTime / time.Second)
		peer := &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: p.Address, PeerAsn: p.ASN},
			Timers:    &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1), ConnectRetry: 1}},
			Transport: &api.Transport{RemotePort: uint32(p.Port), LocalAddress: p.Local},
			AfiSafis: []*api.AfiSafi{
				{Config: &api.AfiSafiConfig{Family: familyOf(netip.MustParseAddr(p.Address)), Enabled: true}},
			},
		}
		if err := sp.s.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
			sp.s.Stop()
			return nil, fmt.Errorf("bgp.peers[%d] %s: %w", i, p.Address, err)
		}
	}
	return sp, nil
}

func familyOf(a netip.Addr) *api.Family {
	if a.Is4() {
		return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
}

// path is the announcement of vip (a host route), next hop the config's
// or self.
func (sp *Speaker) path(vip netip.Addr) (*api.Path, error) {
	nlri, err := apb.New(&api.IPAddressPrefix{Prefix: vip.String(), PrefixLen: uint32(vip.BitLen())})
	if err != nil {
		return nil, err
	}
	origin, err := apb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	attrs := []*apb.Any{origin}
	nh := sp.cfg.NextHop
	if vip.Is4() {
		if nh == "" {
			nh = "0.0.0.0" // next hop self: the session's local address
		}
		a, err := apb.New(&api.NextHopAttribute{NextHop: nh})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	} else {
		if nh == "" {
			nh = "::"
		}
		a, err := apb.New(&api.MpReachNLRIAttribute{Family: familyOf(vip), NextHops: []string{nh}, Nlris: []*apb.Any{nlri}})
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, a)
	}
	return &api.Path{Family: familyOf(vip), Nlri: nlri, Pattrs: attrs}, nil
}

// Announce makes the announced VIPs exactly vips: new ones are announced,
// missing ones withdrawn, and each change logged.
func (sp *Speaker) Announce(ctx context.Context, vips []netip.Addr) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.stopped {
		return nil
	}
	want := map[netip.Addr]bool{}
	for _, v := range vips {
		want[v] = true
	}
	for v := range want {
		if sp.current[v] {
			continue
		}
		p, err := sp.path(v)
		if err != nil {
			return err
		}
		if _, err := sp.s.AddPath(ctx, &api.AddPathRequest{Path: p}); err != nil {
			return fmt.Errorf("bgp: announcing %v: %w", v, err)
		}
		sp.current[v] = true
		sp.log.Info("bgp: VIP announced", "vip", v)
	}
	for v := range sp.current {
		if want[v] {
			continue
		}
		if err := sp.withdraw(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

func (sp *Speaker) withdraw(ctx context.Context, v netip.Addr) error {
	p, err := sp.path(v)
	if err != nil {
		return err
	}
	if err := sp.s.DeletePath(ctx, &api.DeletePathRequest{Family: p.Family, Path: p}); err != nil {
		return fmt.Errorf("bgp: withdrawing %v: %w", v, err)
	}
	delete(sp.current, v)
	sp.log.Info("bgp: VIP withdrawn", "vip", v)
	return nil
}

// Announced lists the VIPs announced now, in order.
func (sp *Speaker) Announced() []netip.Addr {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	out := make([]netip.Addr, 0, len(sp.current))
	for v := range sp.current {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Less(out[j]) })
	return out
}

// Peers reports every peer's session.
func (sp *Speaker) Peers(ctx context.Context) []BGPPeerState {
	var out []BGPPeerState
	_ = sp.s.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := BGPPeerState{Address: p.GetConf().GetNeighborAddress(), ASN: p.GetConf().GetPeerAsn()}
		if s := p.GetState(); s != nil {
			st.State = sessionStateName(s.GetSessionState())
			st.Up = s.GetSessionState() == api.PeerState_ESTABLISHED
		}
		for _, af := range p.GetAfiSafis() {
			st.Announced += int(af.GetState().GetAdvertised())
		}
		if up := p.GetTimers().GetState().GetUptime(); up != nil && st.Up {
			st.Uptime = time.Since(up.AsTime()).Round(time.Second)
		}
		out = append(out, st)
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Address < out[j].Address })
	return out
}

func sessionStateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Stop withdraws every VIP, lets the withdrawals leave (up to wait), and
// closes the sessions.
func (sp *Speaker) Stop(ctx context.Context, wait time.Duration) error {
	sp.mu.Lock()
	sp.stopped = true
	var first error
	for v := range sp.current {
		if err := sp.withdraw(ctx, v); err != nil && first == nil {
			first = err
		}
	}
	sp.mu.Unlock()
	// The withdrawals go out with the peers' next update; give them until
	// every established peer has nothing of ours left, or wait.
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		left := 0
		for _, p := range sp.Peers(ctx) {
			if p.Up {
				left += p.Announced
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sp.s.StopBgp(ctx, &api.StopBgpRequest{}); err != nil && first == nil {
		first = err
	}
	sp.s.Stop()
	return first
}

// slogLogger is gobgp's logger over slog: its info and debug lines are
// debug here (a session's every state change is info in gobgp).
type slogLogger struct{ l *slog.Logger }

func fieldsOf(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	for k, v := range f {
		out = append(out, k, v)
	}
	return out
}

func (s slogLogger) Panic(msg string, f gobgplog.Fields) { s.l.Error("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) Fatal(msg string, f gobgplog.Fields) { s.l.Error("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) Error(msg string, f gobgplog.Fields) { s.l.Error("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) Warn(msg string, f gobgplog.Fields)  { s.l.Warn("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) Info(msg string, f gobgplog.Fields)  { s.l.Debug("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) Debug(msg string, f gobgplog.Fields) { s.l.Debug("bgp: "+msg, fieldsOf(f)...) }
func (s slogLogger) SetLevel(gobgplog.LogLevel)          {}
func (s slogLogger) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }

var (
	dBGPUp        = prometheus.NewDesc("tunbond_director_bgp_session_up", "1 while the BGP session with the peer is established.", []string{"peer"}, nil)
	dBGPPrefixes  = prometheus.NewDesc("tunbond_director_bgp_prefixes_announced", "Prefixes (VIPs) the peer has from this director.", []string{"peer"}, nil)
	dBGPAnnounced = prometheus.NewDesc("tunbond_director_bgp_vips_announced", "VIPs this director announces (those with a healthy real server).", nil, nil)
)

// Describe and Collect export the speaker's peers.
func (sp *Speaker) Describe(ch chan<- *prometheus.Desc) {
	ch <- dBGPUp
	ch <- dBGPPrefixes
	ch <- dBGPAnnounced
}

func (sp *Speaker) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, p := range sp.Peers(ctx) {
		up := 0.0
		if p.Up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(dBGPUp, prometheus.GaugeValue, up, p.Address)
		ch <- prometheus.MustNewConstMetric(dBGPPrefixes, prometheus.GaugeValue, float64(p.Announced), p.Address)
	}
	ch <- prometheus.MustNewConstMetric(dBGPAnnounced, prometheus.GaugeValue, float64(len(sp.Announced())))
}
