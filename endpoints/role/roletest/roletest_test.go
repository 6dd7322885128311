package roletest

import (
	"strings"
	"testing"
)

func TestLogSeen(t *testing.T) {
	var l Log
	seen := l.Seen("started")
	l.Logger().Info("starting")
	select {
	case <-seen:
		t.Fatal("seen before the line")
	default:
	}
	l.Logger().Info("director started", "tun", "vs0")
	<-seen
	if !strings.Contains(l.String(), "msg=\"director started\" tun=vs0") {
		t.Fatalf("log: %s", l.String())
	}
}
