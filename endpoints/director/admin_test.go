package director

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAdminListSaveRestoreOverSocket(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s wlc -p 300", "-a -t 192.0.2.10:80 -r 10.0.0.1 -w 2", "-a -t 192.0.2.10:80 -r 10.0.0.2")
	d.Lock()
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 80, FlagSYN, 60, true), t0)
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 80, FlagACK, 60, true), t0)
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 80, FlagACK, 60, true), t0) // the request: confirmed
	d.Unlock()
	sock := filepath.Join(t.TempDir(), "adm.sock")
	ln, err := ServeAdmin(sock, d)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, err := AdminCall(sock, []string{"-L", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	want := `IP Virtual Server version 1.2.1 (size=1000)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  192.0.2.10:80 wlc persistent 300
  -> 10.0.0.1:80                  Tunnel  2      1          0         
  -> 10.0.0.2:80                  Tunnel  1      0          0         
`
	if out != want {
		t.Fatalf("-L -n:\n%q\nwant\n%q", out, want)
	}
	conns, _ := AdminCall(sock, []string{"-L", "-n", "-c"}, "")
	if !strings.Contains(conns, "TCP 15:00  ESTABLISHED 198.51.100.1:1000") && !strings.Contains(conns, "ESTABLISHED 198.51.100.1:1000") {
		t.Fatalf("-c:\n%s", conns)
	}
	save, err := AdminCall(sock, []string{"-S", "-n"}, "")
	if err != nil {
		t.Fatal(err)
	}
	// A save piped into -R of a fresh director gives the same save.
	fresh := New(1000, DefaultTimeouts, 1500, d.codec)
	sock2 := filepath.Join(t.TempDir(), "adm2.sock")
	ln2, err := ServeAdmin(sock2, fresh)
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if _, err := AdminCall(sock2, []string{"-R"}, save); err != nil {
		t.Fatal(err)
	}
	if again, _ := AdminCall(sock2, []string{"-S", "-n"}, ""); again != save {
		t.Fatalf("restored save differs:\n%s\nwant\n%s", again, save)
	}
	if _, err := AdminCall(sock, []string{"-a", "-t", "192.0.2.99:80", "-r", "10.0.0.1"}, ""); err == nil || !strings.Contains(err.Error(), "no service") {
		t.Fatalf("error %v", err)
	}
}

func TestDirectorMetrics(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s rr", "-a -t 192.0.2.10:80 -r 10.0.0.1")
	d.Lock()
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 80, FlagSYN, 60, true), t0)
	d.Process(tcp("198.51.100.1", 1000, "192.0.2.10", 81, FlagSYN, 60, true), t0)
	d.Unlock()
	mfs, err := d.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				k += "," + l.GetValue()
			}
			if m.Counter != nil {
				got[k] = m.Counter.GetValue()
			} else if m.Gauge != nil {
				got[k] = m.Gauge.GetValue()
			}
		}
	}
	if got["tunbond_director_real_connections_total,10.0.0.1:80,TCP 192.0.2.10:80"] != 1 ||
		got["tunbond_director_real_inactive_connections,10.0.0.1:80,TCP 192.0.2.10:80"] != 1 ||
		got["tunbond_director_dropped_total,no_service"] != 1 || got["tunbond_director_connections"] != 1 {
		t.Fatalf("metrics %v", got)
	}
}

func TestRates(t *testing.T) {
	d := newDirector(t, "-A -t 192.0.2.10:80 -s rr", "-a -t 192.0.2.10:80 -r 10.0.0.1")
	d.Estimate(t0)
	d.Lock()
	for i := 0; i < 20; i++ { // 20 connections of 2 packets of 100 bytes in 2 s
		d.Process(tcp(client(i), 1000, "192.0.2.10", 80, FlagSYN, 100, true), t0)
		d.Process(tcp(client(i), 1000, "192.0.2.10", 80, FlagACK, 100, true), t0)
	}
	d.Unlock()
	d.Estimate(t0.Add(time.Second)) // not yet: 2 s intervals
	d.Estimate(t0.Add(2 * time.Second))
	out, err := d.Admin([]string{"-L", "-n", "--rate"}, "", t0)
	if err != nil {
		t.Fatal(err)
	}
	// 10 conn/s, 20 packets/s, 2000 bytes/s in, nothing out (replies bypass the director).
	found := false
	for _, line := range strings.Split(out, "\n") {
		if strings.Join(strings.Fields(line), " ") == "TCP 192.0.2.10:80 10 20 0 2000 0" {
			found = true
		}
	}
	if !found {
		t.Fatalf("--rate:\n%s", out)
	}
}
