package lab

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/tunbond/tunbond/endpoints/bond"
)

func endpointConfig(t *testing.T, s BondSpec, side int) *bond.Config {
	t.Helper()
	cfg, err := s.EndpointConfig(side)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestEndpointConfigIsTheUsersDefaults checks that the lab measures what a
// user runs: every tuning key of the lab's endpoint is what a config file
// that sets only the topology gets from LoadConfig.
func TestEndpointConfigIsTheUsersDefaults(t *testing.T) {
	f := filepath.Join(t.TempDir(), "site-a.yaml")
	body := `
tun: {name: bond0, address: 10.77.0.1/30}
key: 7
routing: manage
paths:
  - {name: ul0, local: 10.100.0.1, remote: 10.100.0.2, device: ul0}
  - {name: ul1, local: 10.100.1.1, remote: 10.100.1.2, device: ul1}
`
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	user, err := bond.LoadConfig(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	lab := endpointConfig(t, BondSpec{Weights: []int64{1, 1}}, 1)
	type tuning struct {
		MTU                       int
		Encap, Scheduler, Routing string
		Key                       int64
		Checksum                  bool
		BatchSize                 int
		Reorder, Keepalive        any
		RouteTable, RulePriority  int
	}
	of := func(c *bond.Config) tuning {
		return tuning{c.TUN.MTU, c.Encap, c.Scheduler, c.Routing, c.Key, c.Checksum, c.BatchSize,
			c.Reorder, c.Keepalive, c.RouteTable, c.RulePriority}
	}
	if got, want := of(lab), of(user); !reflect.DeepEqual(got, want) {
		t.Fatalf("the lab's endpoint is tuned beyond a user's config:\nlab  %+v\nuser %+v", got, want)
	}
	if !reflect.DeepEqual(lab.Paths, user.Paths) {
		t.Fatalf("paths: lab %+v, user %+v", lab.Paths, user.Paths)
	}
}
