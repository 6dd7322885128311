package lab

import (
	"fmt"
	"io"
	"testing"
)

func startDirectorLab(t *testing.T, s DirectorSpec) *DirectorLab {
	t.Helper()
	requireRoot(t)
	l, err := StartDirectorLab(newID(t), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestDirectorHTTPSpreadAndDirectReturn: 3000 HTTP requests, a new
// connection each, to the VIP: rr spreads them within 1%, every response
// comes from its real server straight to the client, not via the director.
func TestDirectorHTTPSpreadAndDirectReturn(t *testing.T) {
	l := startDirectorLab(t, DirectorSpec{Reals: 3, Scheduler: "rr", Body: 20000})
	c := l.Client()
	eth, _ := l.Net.NS("director").NL.LinkByName("eth0")
	rx0 := eth.Attrs().Statistics.RxBytes
	count := map[string]int{}
	const n = 3000
	var bodyBytes int64
	for i := 0; i < n; i++ {
		resp, err := c.Get(fmt.Sprintf("http://%s/", DirectorVIP))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("request %d body: %v", i, err)
		}
		bodyBytes += int64(len(b))
		count[resp.Header.Get("X-Real-Server")]++
	}
	for i := 0; i < 3; i++ {
		got := count[fmt.Sprintf("rs%d", i)]
		if d := float64(got)/n - 1.0/3; d > 0.01 || d < -0.01 {
			t.Errorf("rs%d served %d of %d", i, got, n)
		}
	}
	eth, _ = l.Net.NS("director").NL.LinkByName("eth0")
	rx := eth.Attrs().Statistics.RxBytes - rx0
	t.Logf("served %v; the director received %d bytes while the client got %d bytes of bodies", count, rx, bodyBytes)
	if rx > uint64(bodyBytes)/10 {
		t.Fatalf("the director received %d bytes for %d bytes of responses: replies pass through it", rx, bodyBytes)
	}
}
