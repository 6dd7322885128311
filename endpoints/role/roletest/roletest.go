// Package roletest has what the roles' tests over fakes share: a log sink
// that the roles' goroutines may write to at once and that tells when a
// line has been logged, so a test awaits a log line instead of sleeping.
package roletest

import (
	"bytes"
	"log/slog"
	"sync"
)

// Log is a concurrency-safe log sink. The zero value is ready.
type Log struct {
	mu      sync.Mutex
	b       bytes.Buffer
	waiters map[string]chan struct{}
}

// Logger is a text logger writing to l.
func (l *Log) Logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for text, ch := range l.waiters {
		if bytes.Contains(p, []byte(text)) {
			close(ch)
			delete(l.waiters, text)
		}
	}
	return l.b.Write(p)
}

// Seen is closed once a line containing text is logged, from now on.
func (l *Log) Seen(text string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.waiters == nil {
		l.waiters = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	l.waiters[text] = ch
	return ch
}

// String is everything logged so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
