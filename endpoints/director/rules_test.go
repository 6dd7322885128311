package director

import (
	"strings"
	"testing"
	"time"
)

func apply(t *testing.T, r *Rules, line string) {
	t.Helper()
	c, err := ParseCommand(strings.Fields(line))
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	if err := r.Apply(c); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
}

func TestRulesSaveRestoreRoundTrip(t *testing.T) {
	r := &Rules{}
	apply(t, r, "-A -t 192.0.2.10:80 -s mh -p 300")
	apply(t, r, "-a -t 192.0.2.10:80 -r 10.0.0.1 -i -w 3")
	apply(t, r, "-a -t 192.0.2.10:80 -r 10.0.0.2:8080 -i")
	apply(t, r, "-A -u 192.0.2.10:53 -s rr")
	apply(t, r, "-a -u 192.0.2.10:53 -r 10.0.0.3:53 -w 0")
	apply(t, r, "-A -t 192.0.2.11:0")
	apply(t, r, "-e -t 192.0.2.10:80 -r 10.0.0.2:8080 -w 2")
	save := r.Save()
	want := `-A -t 192.0.2.10:80 -s mh -p 300
-a -t 192.0.2.10:80 -r 10.0.0.1:80 -i -w 3
-a -t 192.0.2.10:80 -r 10.0.0.2:8080 -i -w 2
-A -t 192.0.2.11:0 -s wlc
-A -u 192.0.2.10:53 -s rr
-a -u 192.0.2.10:53 -r 10.0.0.3:53 -i -w 0
`
	if save != want {
		t.Fatalf("save:\n%s\nwant:\n%s", save, want)
	}
	fresh := &Rules{}
	if err := fresh.Restore(save); err != nil {
		t.Fatal(err)
	}
	if got := fresh.Save(); got != save {
		t.Fatalf("restored save differs:\n%s", got)
	}
	if s := fresh.Find(6, r.Services[0].VIP); s == nil || s.Persistent != 300*time.Second || len(s.Reals) != 2 {
		t.Fatalf("restored service %+v", s)
	}
}

func TestRulesEditDeleteClear(t *testing.T) {
	r := &Rules{}
	apply(t, r, "-A -t 192.0.2.10:80 -s rr")
	apply(t, r, "-a -t 192.0.2.10:80 -r 10.0.0.1 -w 1")
	apply(t, r, "-E -t 192.0.2.10:80 -s wlc -p")
	if s := r.Services[0]; s.Scheduler != "wlc" || s.Persistent != 300*time.Second {
		t.Fatalf("edit: %+v", s)
	}
	apply(t, r, "-d -t 192.0.2.10:80 -r 10.0.0.1")
	if len(r.Services[0].Reals) != 0 {
		t.Fatal("real server not deleted")
	}
	apply(t, r, "-D -t 192.0.2.10:80")
	if len(r.Services) != 0 {
		t.Fatal("service not deleted")
	}
	apply(t, r, "-A -u 192.0.2.10:53")
	apply(t, r, "-C")
	if len(r.Services) != 0 {
		t.Fatal("clear left services")
	}
}

func TestCommandErrors(t *testing.T) {
	for _, tt := range []struct{ line, want string }{
		{"", "no command"},
		{"-A -t 192.0.2.10:80 -s fastest", "not a scheduler"},
		{"-A -s rr", "needs a service"},
		{"-a -t 192.0.2.10:80", "needs a real server"},
		{"-a -t 192.0.2.10:80 -r 10.0.0.1 -g", "tunnelling only"},
		{"-a -t 192.0.2.10:80 -r 10.0.0.1 -w many", "not a weight"},
		{"-A -t nowhere:80", "-t"},
		{"-A -D -t 192.0.2.10:80", "two commands"},
		{"-A -t 192.0.2.10:80 --bogus", "unknown option"},
	} {
		_, err := ParseCommand(strings.Fields(tt.line))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want %q", tt.line, err, tt.want)
		}
	}
	r := &Rules{}
	for _, line := range []string{"-a -t 192.0.2.10:80 -r 10.0.0.1", "-D -t 192.0.2.10:80"} {
		c, _ := ParseCommand(strings.Fields(line))
		if err := r.Apply(c); err == nil || !strings.Contains(err.Error(), "no service") {
			t.Errorf("%s on empty rules: %v", line, err)
		}
	}
	if err := r.Restore("-A -t 192.0.2.10:80\n-A -t 192.0.2.10:80\n"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("restore error %v, want one naming line 2", err)
	}
}
