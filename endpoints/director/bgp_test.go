package director

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// router is a gobgp speaker standing in for the upstream router, on
// loopback: it listens on 127.0.0.1 and takes the director at 127.0.0.2.
type router struct {
	s    *server.BgpServer
	port int
}

func newRouter(t *testing.T) *router {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := server.NewBgpServer(server.LoggerOption(slogLogger{slog.New(slog.NewTextHandler(io.Discard, nil))}))
	go s.Serve()
	ctx := context.Background()
	if err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{Asn: 65000, RouterId: "10.255.0.1",
		ListenPort: int32(port), ListenAddresses: []string{"127.0.0.1"}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.2", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return &router{s: s, port: port}
}

// routes is the router's table: prefix → next hop.
func (r *router) routes(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := r.s.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL,
		Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}, func(d *api.Destination) {
		for _, p := range d.Paths {
			for _, a := range p.Pattrs {
				nh := &api.NextHopAttribute{}
				if a.UnmarshalTo(nh) == nil {
					out[d.Prefix] = nh.NextHop
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func awaitRoutes(t *testing.T, r *router, what string, ok func(map[string]string) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !ok(r.routes(t)) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the router has %v", what, r.routes(t))
		}
		<-tick.C
	}
}

// TestSpeakerAnnouncesAndWithdraws: the director's speaker peers with a
// router, announces its healthy VIPs as host routes with itself as next
// hop, withdraws one that loses its servers, and withdraws all at Stop.
func TestSpeakerAnnouncesAndWithdraws(t *testing.T) {
	r := newRouter(t)
	sp, err := StartSpeaker(context.Background(), BGPConfig{ASN: 65001, RouterID: "10.255.0.2",
		Peers: []BGPPeerConfig{{Address: "127.0.0.1", ASN: 65000, HoldTime: 9 * time.Second, Port: r.port, Local: "127.0.0.2"}}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	vips := []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")}
	if err := sp.Announce(ctx, vips); err != nil {
		t.Fatal(err)
	}
	awaitRoutes(t, r, "both VIPs announced", func(m map[string]string) bool {
		return m["192.0.2.10/32"] == "127.0.0.2" && m["192.0.2.11/32"] == "127.0.0.2"
	})
	peers := sp.Peers(ctx)
	if len(peers) != 1 || !peers[0].Up || peers[0].Announced != 2 || peers[0].State != "established" {
		t.Fatalf("peers %+v", peers)
	}
	if err := sp.Announce(ctx, vips[:1]); err != nil { // .11 lost its last server
		t.Fatal(err)
	}
	awaitRoutes(t, r, "192.0.2.11 withdrawn", func(m map[string]string) bool {
		_, has := m["192.0.2.11/32"]
		return !has && m["192.0.2.10/32"] != ""
	})
	if err := sp.Stop(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	awaitRoutes(t, r, "everything withdrawn at Stop", func(m map[string]string) bool { return len(m) == 0 })
}

// TestDirectorAnnouncesHealthyVIPs: a running director with a bgp section
// announces its VIP while its real server passes its checks, withdraws it
// when the server fails them, announces it again when it recovers, shows
// the peer to `adm --bgp`, and withdraws everything at Close.
func TestDirectorAnnouncesHealthyVIPs(t *testing.T) {
	router, r := newBGPRig(t, 1)
	var healthy atomicBool
	healthy.Store(true)
	r.deps.Probe = func(ctx context.Context, rip netip.AddrPort) error {
		if !healthy.Load() {
			return errors.New("connection refused")
		}
		return nil
	}
	d := r.start(t)
	announced := func(m map[string]string) bool { return m[vip+"/32"] != "" }
	awaitRoutes(t, router, "the VIP announced", announced)
	out, err := d.Admin([]string{"--bgp"}, "", t0)
	if err != nil || !strings.Contains(out, "127.0.0.1") || !strings.Contains(out, "established") {
		t.Fatalf("adm --bgp: %v\n%s", err, out)
	}
	if fams := families(t, r.reg); !fams["tunbond_director_bgp_session_up"] || !fams["tunbond_director_bgp_prefixes_announced"] {
		t.Errorf("bgp metrics missing: %v", fams)
	}
	healthy.Store(false)
	awaitRoutes(t, router, "the VIP withdrawn with its last server down", func(m map[string]string) bool { return !announced(m) })
	healthy.Store(true)
	awaitRoutes(t, router, "the VIP back with its server", announced)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	awaitRoutes(t, router, "the VIP withdrawn at Close", func(m map[string]string) bool { return !announced(m) })
}

type atomicBool struct{ atomic.Bool }

// TestDirectorAnnouncesNothingUnchecked: a director whose real server
// fails its first checks announces nothing (a server starts up in the
// table, but BGP waits for a passed check), and announces the VIP once the
// server passes one.
func TestDirectorAnnouncesNothingUnchecked(t *testing.T) {
	router, r := newBGPRig(t, 100)
	var healthy atomicBool
	var probes atomic.Int64
	r.deps.Probe = func(ctx context.Context, rip netip.AddrPort) error {
		probes.Add(1)
		if !healthy.Load() {
			return errors.New("connection refused")
		}
		return nil
	}
	d := r.start(t)
	deadline := time.After(15 * time.Second)
	for {
		out, _ := d.Admin([]string{"--bgp"}, "", t0)
		if strings.Contains(out, "established") && probes.Load() >= 5 {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("no session, or no probes: %s", out)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if m := router.routes(t); len(m) != 0 {
		t.Fatalf("the VIP is announced while its only server has failed every check (up, for Fall 100): %v", m)
	}
	healthy.Store(true)
	awaitRoutes(t, router, "the VIP announced after a passed check", func(m map[string]string) bool { return m[vip+"/32"] != "" })
}

// newBGPRig is a director rig with a bgp section peering with a router on
// loopback, its server checked every millisecond (fall: failures to take
// it down).
func newBGPRig(t *testing.T, fall int) (*router, *rig) {
	t.Helper()
	router := newRouter(t)
	r := newRig(t)
	r.cfg.Check = Check{Type: "tcp", Interval: time.Millisecond, Timeout: time.Second, Rise: 1, Fall: fall}
	r.cfg.BGP = &BGPConfig{ASN: 65001, RouterID: "10.255.0.2",
		Peers: []BGPPeerConfig{{Address: "127.0.0.1", ASN: 65000, HoldTime: 9 * time.Second, Port: router.port, Local: "127.0.0.2"}}}
	return router, r
}
