// Package role is the life every tunbond role shares: a role stops either
// by Close or by itself on an error it cannot go on after (its TUN deleted),
// and Run runs one until its context ends. Each role embeds a Stop.
package role

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// Stop records how a role stopped. The zero value is running.
type Stop struct {
	init    sync.Once
	stopped chan struct{}
	once    sync.Once
	mu      sync.Mutex
	err     error
	closing atomic.Bool
}

func (s *Stop) ch() chan struct{} {
	s.init.Do(func() { s.stopped = make(chan struct{}) })
	return s.stopped
}

// Done is closed when the role stops, by Close or by itself.
func (s *Stop) Done() <-chan struct{} { return s.ch() }

// Err is why the role stopped by itself, or nil (running, or closed).
func (s *Stop) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Closing reports that Close has begun or the role has stopped: errors
// from its devices and sockets are then expected, not news.
func (s *Stop) Closing() bool { return s.closing.Load() }

// Fail stops the role with err unless it has stopped already or is
// closing. It reports whether this call stopped it (so the caller logs
// why, once); the owner still has to Close to restore the host. before,
// if given, runs once Closing is true and before Done is closed, so what
// the owner sees at Done (paths down, say) is already so.
func (s *Stop) Fail(err error, before ...func()) bool {
	if s.closing.Load() {
		return false
	}
	return s.stop(err, before...)
}

// Close marks the stop as Close's. It reports whether the role was still
// running.
func (s *Stop) Close() bool {
	s.closing.Store(true)
	return s.stop(nil)
}

func (s *Stop) stop(err error, before ...func()) (first bool) {
	s.once.Do(func() {
		s.mu.Lock()
		s.err = err
		s.mu.Unlock()
		s.closing.Store(true)
		for _, f := range before {
			f()
		}
		close(s.ch())
		first = true
	})
	return first
}

// Role is a started role.
type Role interface {
	Done() <-chan struct{}
	Err() error
	Close() error
}

// Run starts a role and runs it until ctx ends or it stops by itself, then
// closes it. It returns why the role stopped by itself (nil when ctx ended)
// joined with what Close could not undo.
func Run[R Role](ctx context.Context, start func() (R, error)) error {
	r, err := start()
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
	case <-r.Done():
	}
	cerr := r.Close()
	return errors.Join(r.Err(), cerr)
}
