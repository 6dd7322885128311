package lab

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/tunbond/tunbond/endpoints/director"
	"github.com/tunbond/tunbond/endpoints/realserver"
	"github.com/tunbond/tunbond/lab/netns"
	"github.com/tunbond/tunbond/tunnel/encap"
)

// Director lab addresses: the client 10.10.0.2, the director 10.20.0.2,
// real server i 10.30.i.2, each behind the router (.1 of each subnet); the
// VIP 10.99.0.10 is routed by the router to the director.
const (
	DirectorVIP    = "10.99.0.10"
	directorAddr   = "10.20.0.2"
	directorClient = "10.10.0.2"
)

// DirectorAddr is the director's address towards the real servers.
const DirectorAddr = directorAddr

// RealAddr is real server i's address.
func RealAddr(i int) string { return fmt.Sprintf("10.30.%d.2", i) }

// DirectorTopology is a client, a router, a director and n real servers.
func DirectorTopology(n int) netns.Topology {
	t := netns.Topology{Namespaces: []string{"client", "router", "director"}}
	t.Links = append(t.Links,
		netns.Link{A: netns.End{NS: "client", Name: "eth0", Addr: directorClient + "/24"}, B: netns.End{NS: "router", Name: "client", Addr: "10.10.0.1/24"}},
		netns.Link{A: netns.End{NS: "director", Name: "eth0", Addr: directorAddr + "/24"}, B: netns.End{NS: "router", Name: "director", Addr: "10.20.0.1/24"}},
	)
	t.Routes = append(t.Routes,
		netns.Route{NS: "client", Dst: "default", Via: "10.10.0.1"},
		netns.Route{NS: "director", Dst: "default", Via: "10.20.0.1"},
		netns.Route{NS: "router", Dst: DirectorVIP + "/32", Via: directorAddr},
	)
	for i := 0; i < n; i++ {
		ns := fmt.Sprintf("rs%d", i)
		t.Namespaces = append(t.Namespaces, ns)
		t.Links = append(t.Links, netns.Link{A: netns.End{NS: ns, Name: "eth0", Addr: RealAddr(i) + "/24"},
			B: netns.End{NS: "router", Name: ns, Addr: fmt.Sprintf("10.30.%d.1/24", i)}})
		t.Routes = append(t.Routes, netns.Route{NS: ns, Dst: "default", Via: fmt.Sprintf("10.30.%d.1", i)})
	}
	return t
}

// DirectorLab is a running director topology: the director, an agent and
// an HTTP server on every real server.
type DirectorLab struct {
	Net      *netns.Net
	Director *director.Running
	Agents   []*realserver.Agent
	servers  []*http.Server
	body     string
}

// DirectorSpec configures the lab's director.
type DirectorSpec struct {
	Reals     int
	Scheduler string
	Weights   []int
	Body      int // bytes of each HTTP response
	Check     director.Check
	GRE       bool // GRE (key 9) towards the real servers instead of IPIP
	// Connections is the table's size (connections); 0: the default.
	Connections int
	// Ingress is the director's ingress: tun ("") or ring.
	Ingress string
	Log     *slog.Logger
}

// StartDirectorLab builds the topology and starts everything.
func StartDirectorLab(id string, s DirectorSpec) (_ *DirectorLab, err error) {
	n, err := DirectorTopology(s.Reals).Build(id)
	if err != nil {
		return nil, err
	}
	l := &DirectorLab{Net: n}
	var codec encap.Encapsulation = encap.IPIP{}
	if s.GRE {
		codec = encap.GRE{Key: 9}
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	log := s.Log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := PrepareDirectorNet(n); err != nil {
		return nil, err
	}
	var rules strings.Builder
	sched := s.Scheduler
	if sched == "" {
		sched = "rr"
	}
	fmt.Fprintf(&rules, "-A -t %s:80 -s %s\n", DirectorVIP, sched)
	for i := 0; i < s.Reals; i++ {
		w := 1
		if i < len(s.Weights) {
			w = s.Weights[i]
		}
		fmt.Fprintf(&rules, "-a -t %s:80 -r %s:80 -i -w %d\n", DirectorVIP, RealAddr(i), w)
	}
	l.body = strings.Repeat("x", s.Body)
	l.servers = make([]*http.Server, s.Reals)
	for i := 0; i < s.Reals; i++ {
		ns := n.NS(fmt.Sprintf("rs%d", i))
		a, err := realserver.Start(realserver.Config{TUN: "vip0", Local: netip.MustParseAddr(RealAddr(i)),
			Directors: []netip.Addr{netip.MustParseAddr(directorAddr)}, VIPs: []netip.Addr{netip.MustParseAddr(DirectorVIP)},
			Encap: codec}, realserver.Deps{Host: ns.Host(), Log: log})
		if err != nil {
			return nil, fmt.Errorf("rs%d: %w", i, err)
		}
		l.Agents = append(l.Agents, a)
		if err := l.StartServer(i); err != nil {
			return nil, err
		}
	}
	check := s.Check
	if check.Type == "" {
		check.Type = "none"
	}
	d, err := director.Start(director.RunConfig{TUN: "vs0", Ingress: s.Ingress, Local: netip.MustParseAddr(directorAddr),
		Encap: codec, Timeouts: director.DefaultTimeouts, Check: check, Connections: s.Connections,
		Rules: rules.String()}, director.Deps{Host: n.NS("director").Host(), Log: log})
	if err != nil {
		return nil, fmt.Errorf("director: %w", err)
	}
	l.Director = d
	return l, nil
}

// PrepareDirectorNet turns on forwarding on the router and the director
// and loosens reverse-path filtering there (replies from the VIP come back
// from the real servers' side). The router's link to the director carries
// frames, not GSO aggregates (gso_max_segs 1: it segments what it
// forwards), as a wire would: the director's ingress ring takes packets of
// a frame's size, as a NIC with GRO off hands them over.
func PrepareDirectorNet(n *netns.Net) error {
	for _, x := range []struct{ ns, key, val string }{
		{"router", "ipv4/ip_forward", "1"}, {"router", "ipv4/conf/all/rp_filter", "0"},
		{"director", "ipv4/ip_forward", "1"}, {"director", "ipv4/conf/all/rp_filter", "0"},
	} {
		if err := n.NS(x.ns).Do(func() error { return os.WriteFile("/proc/sys/net/"+x.key, []byte(x.val), 0o644) }); err != nil {
			return fmt.Errorf("%s: %s: %w", x.ns, x.key, err)
		}
	}
	l, err := n.NS("router").NL.LinkByName("director")
	if err != nil {
		return err
	}
	if err := n.NS("router").NL.LinkSetGSOMaxSegs(l, 1); err != nil {
		return fmt.Errorf("router: gso_max_segs 1 on the link to the director: %w", err)
	}
	return nil
}

// ServeHTTP serves HTTP on port 80 in ns, answering with name in
// X-Real-Server and body.
func ServeHTTP(ns *netns.Namespace, name, body string) (*http.Server, error) {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp4", "0.0.0.0:80"); return }); err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Real-Server", name)
		io.WriteString(w, name+"\n"+body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return srv, nil
}

// HTTPClient returns an HTTP client in ns; every request is a new connection.
func HTTPClient(ns *netns.Namespace) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			var d net.Dialer
			err = ns.Do(func() error { c, err = d.DialContext(ctx, network, addr); return err })
			return
		}}}
}

// Client returns an HTTP client in the client namespace; every request is
// a new connection.
func (l *DirectorLab) Client() *http.Client { return HTTPClient(l.Net.NS("client")) }

// StartServer starts real server i's HTTP service on port 80: it answers
// with its name in X-Real-Server and the body.
func (l *DirectorLab) StartServer(i int) error {
	name := fmt.Sprintf("rs%d", i)
	srv, err := ServeHTTP(l.Net.NS(name), name, l.body)
	if err != nil {
		return err
	}
	l.servers[i] = srv
	return nil
}

// StopServer stops real server i's HTTP service.
func (l *DirectorLab) StopServer(i int) error { return l.servers[i].Close() }

// Close stops everything and deletes the namespaces.
func (l *DirectorLab) Close() error {
	for _, s := range l.servers {
		if s != nil {
			s.Close()
		}
	}
	for _, a := range l.Agents {
		a.Close()
	}
	if l.Director != nil {
		l.Director.Close()
	}
	return l.Net.Close()
}

// BGPDirectorAddr is director i's address towards the router and the real
// servers (director 0's is DirectorAddr), BGPRouterAddr the router's on
// that link.
func BGPDirectorAddr(i int) string { return fmt.Sprintf("10.%d.0.2", 20+i) }
func BGPRouterAddr(i int) string   { return fmt.Sprintf("10.%d.0.1", 20+i) }

// BGPDirectorTopology is DirectorTopology with n directors ("director",
// "director1", ...) and no static route to the VIP: the directors announce
// it to the router over BGP.
func BGPDirectorTopology(directors, reals int) netns.Topology {
	t := DirectorTopology(reals)
	var routes []netns.Route
	for _, r := range t.Routes {
		if r.NS != "router" || r.Dst != DirectorVIP+"/32" {
			routes = append(routes, r)
		}
	}
	t.Routes = routes
	for i := 1; i < directors; i++ {
		ns := BGPDirectorNS(i)
		t.Namespaces = append(t.Namespaces, ns)
		t.Links = append(t.Links, netns.Link{A: netns.End{NS: ns, Name: "eth0", Addr: BGPDirectorAddr(i) + "/24"},
			B: netns.End{NS: "router", Name: ns, Addr: BGPRouterAddr(i) + "/24"}})
		t.Routes = append(t.Routes, netns.Route{NS: ns, Dst: "default", Via: BGPRouterAddr(i)})
	}
	return t
}

// BGPDirectorNS is director i's namespace.
func BGPDirectorNS(i int) string {
	if i == 0 {
		return "director"
	}
	return fmt.Sprintf("director%d", i)
}
