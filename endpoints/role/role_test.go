package role

import (
	"context"
	"errors"
	"testing"
)

type fakeRole struct {
	Stop
	closed int
	undo   error
}

func (f *fakeRole) Close() error { f.Stop.Close(); f.closed++; return f.undo }

func TestFailThenClose(t *testing.T) {
	var s Stop
	select {
	case <-s.Done():
		t.Fatal("done while running")
	default:
	}
	boom := errors.New("tun gone")
	ran := false
	if !s.Fail(boom, func() {
		ran = true
		select {
		case <-s.Done():
			t.Error("Done closed before the before-hook ran")
		default:
		}
		if !s.Closing() {
			t.Error("not Closing in the before-hook")
		}
	}) {
		t.Fatal("the first Fail did not stop it")
	}
	if !ran {
		t.Fatal("the before-hook did not run")
	}
	if s.Fail(errors.New("again")) {
		t.Fatal("a second Fail stopped it again")
	}
	<-s.Done()
	if s.Close() {
		t.Fatal("Close after Fail says it was running")
	}
	if !errors.Is(s.Err(), boom) {
		t.Fatalf("Err %v, want the first failure", s.Err())
	}
}

func TestCloseThenFailIsQuiet(t *testing.T) {
	var s Stop
	if !s.Close() {
		t.Fatal("Close of a running role")
	}
	if s.Fail(errors.New("socket closed")) {
		t.Fatal("an error while closing stopped the role again")
	}
	if s.Err() != nil || !s.Closing() {
		t.Fatalf("err %v closing %v", s.Err(), s.Closing())
	}
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := &fakeRole{}
	if err := Run(ctx, func() (*fakeRole, error) { return f, nil }); err != nil || f.closed != 1 {
		t.Fatalf("on ctx: %v, closed %d", err, f.closed)
	}
	boom, undo := errors.New("tun gone"), errors.New("route left")
	f = &fakeRole{undo: undo}
	f.Fail(boom)
	err := Run(context.Background(), func() (*fakeRole, error) { return f, nil })
	if !errors.Is(err, boom) || !errors.Is(err, undo) || f.closed != 1 {
		t.Fatalf("stopped by itself: %v, closed %d", err, f.closed)
	}
	start := errors.New("no such device")
	if err := Run(context.Background(), func() (*fakeRole, error) { return nil, start }); !errors.Is(err, start) {
		t.Fatalf("start error: %v", err)
	}
}
