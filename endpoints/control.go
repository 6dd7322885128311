package endpoints

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ControlRequest is one line sent to the control socket.
type ControlRequest struct {
	Cmd    string `json:"cmd"` // status | weight
	Path   string `json:"path,omitempty"`
	Weight int64  `json:"weight,omitempty"`
}

// ControlResponse is the one-line answer.
type ControlResponse struct {
	Error   string         `json:"error,omitempty"`
	Paths   []PathStatus   `json:"paths,omitempty"`
	Reorder map[string]any `json:"reorder,omitempty"`
}

type controlServer struct {
	ln   net.Listener
	path string
	done chan struct{}
}

// ListenUnix listens on a unix socket at path (mode 0600), creating its
// directory; a socket a running process answers on is an error, a stale one
// (a crashed run's) is replaced.
func ListenUnix(path string) (net.Listener, error) {
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

// listenControl serves the control socket at path.
func listenControl(path string, e *Engine) (*controlServer, error) {
	ln, err := ListenUnix(path)
	if err != nil {
		return nil, fmt.Errorf("control.socket: %w", err)
	}
	s := &controlServer{ln: ln, path: path, done: make(chan struct{})}
	go s.serve(e)
	return s, nil
}

func (s *controlServer) serve(e *Engine) {
	defer close(s.done)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			sc := bufio.NewScanner(c)
			enc := json.NewEncoder(c)
			for sc.Scan() {
				var req ControlRequest
				if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
					_ = enc.Encode(ControlResponse{Error: "bad request: " + err.Error()})
					continue
				}
				_ = enc.Encode(handleControl(e, req))
			}
		}()
	}
}

func handleControl(e *Engine, req ControlRequest) ControlResponse {
	switch req.Cmd {
	case "status":
		r := ControlResponse{Paths: e.Status()}
		if s := e.ReorderStats(); s != nil {
			r.Reorder = map[string]any{
				"depth": s.Depth.Load(), "released": s.Released.Load(), "holes_lost": s.HolesLost.Load(),
				"holes_timeout": s.HolesTimeout.Load(), "holes_overflow": s.HolesOverflow.Load(),
				"late": s.Late.Load(), "duplicate": s.Duplicate.Load(),
			}
		}
		return r
	case "weight":
		if req.Weight < 0 || req.Weight > 1<<20 {
			return ControlResponse{Error: fmt.Sprintf("weight %d out of range 0..1048576", req.Weight)}
		}
		if err := e.SetWeight(req.Path, uint32(req.Weight)); err != nil {
			return ControlResponse{Error: err.Error()}
		}
		return ControlResponse{Paths: e.Status()}
	}
	return ControlResponse{Error: fmt.Sprintf("unknown command %q (status | weight)", req.Cmd)}
}

func (s *controlServer) Close() error {
	if s == nil {
		return nil
	}
	err := s.ln.Close()
	<-s.done
	_ = os.Remove(s.path)
	return err
}

// Control sends one request to the endpoint's control socket.
func Control(socket string, req ControlRequest) (*ControlResponse, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w (is `tunbond endpoint` running?)", socket, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return nil, err
	}
	var resp ControlResponse
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
