// Package ctlsock is the one unix-socket server and client behind `tunbond
// ctl` (the bond's control socket) and `tunbond adm` (the director's admin
// socket): one JSON request per line, one JSON answer per request.
package ctlsock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Listen listens on a unix socket at path (mode 0600), creating its
// directory. A socket that a running process answers on is an error, a
// stale one (a crashed run's) is replaced, and a path that exists and is
// not a socket is refused and left alone.
func Listen(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != fs.ModeSocket {
		return nil, fmt.Errorf("%s exists and is not a socket (a %s): refusing to replace it", path, kind(fi.Mode()))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by a running tunbond", path)
	}
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	_ = os.Chmod(path, 0o600)
	return ln, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeSymlink != 0:
		return "symbolic link"
	case m.IsRegular():
		return "regular file"
	}
	return m.Type().String()
}

// Server answers requests on a unix socket until Close.
type Server struct {
	ln   net.Listener
	path string
	done chan struct{}
}

// Serve listens at path and answers each request of type Req with
// handle's result. A connection lives at most timeout; a request that does
// not decode is answered with bad(err) and ends the connection.
func Serve[Req any](path string, timeout time.Duration, handle func(Req) any, bad func(error) any) (*Server, error) {
	ln, err := Listen(path)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, path: path, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(timeout))
				dec, enc := json.NewDecoder(c), json.NewEncoder(c)
				for {
					var req Req
					if err := dec.Decode(&req); err != nil {
						if !errors.Is(err, net.ErrClosed) && err.Error() != "EOF" {
							_ = enc.Encode(bad(err))
						}
						return
					}
					if enc.Encode(handle(req)) != nil {
						return
					}
				}
			}()
		}
	}()
	return s, nil
}

// Addr is the socket's path.
func (s *Server) Addr() string { return s.path }

// Close stops accepting, waits for the accept loop and removes the socket.
func (s *Server) Close() error {
	if s == nil {
		return nil
	}
	err := s.ln.Close()
	<-s.done
	_ = os.Remove(s.path)
	return err
}

// Call sends req to the socket and decodes one answer into resp. what names
// the command to start when nothing listens ("tunbond endpoint").
func Call(socket, what string, timeout time.Duration, req, resp any) error {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return fmt.Errorf("socket %s: %w (is `%s` running?)", socket, err, what)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	return json.NewDecoder(c).Decode(resp)
}
