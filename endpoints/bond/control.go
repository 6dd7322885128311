package bond

import (
	"errors"
	"fmt"
	"time"

	"github.com/tunbond/tunbond/endpoints/ctlsock"
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
	// Scheduler is the bond's scheduler; Solo, for adaptive, the one path
	// it runs the bond on, having left the others out (else "").
	Scheduler string `json:"scheduler,omitempty"`
	Solo      string `json:"solo,omitempty"`
}

// listenControl serves the control socket at path.
func listenControl(path string, e *Engine) (*ctlsock.Server, error) {
	s, err := ctlsock.Serve(path, 5*time.Second,
		func(req ControlRequest) any { return handleControl(e, req) },
		func(err error) any { return ControlResponse{Error: "bad request: " + err.Error()} })
	if err != nil {
		return nil, fmt.Errorf("control.socket: %w", err)
	}
	return s, nil
}

func handleControl(e *Engine, req ControlRequest) ControlResponse {
	switch req.Cmd {
	case "status":
		r := ControlResponse{Paths: e.Status(), Scheduler: e.cfg.Scheduler, Solo: e.Solo()}
		if s := e.ReorderStats(); s != nil {
			r.Reorder = map[string]any{
				"depth": s.Depth.Load(), "released": s.Released.Load(), "holes_lost": s.HolesLost.Load(),
				"holes_timeout": s.HolesTimeout.Load(), "holes_overflow": s.HolesOverflow.Load(),
				"late": s.Late.Load(), "late_delivered": s.LateDelivered.Load(), "duplicate": s.Duplicate.Load(), "out_of_window": s.OutOfWindow.Load(),
				"repair_asked": s.RepairAsked.Load(), "repaired": s.Repaired.Load(),
				"repair_offered": e.offerRepair.Load(), "repair_asking": e.repairAsking(),
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

// Control sends one request to the endpoint's control socket.
func Control(socket string, req ControlRequest) (*ControlResponse, error) {
	var resp ControlResponse
	if err := ctlsock.Call(socket, "tunbond endpoint", 5*time.Second, req, &resp); err != nil {
		return nil, fmt.Errorf("control %w", err)
	}
	if resp.Error != "" {
		return &resp, errors.New(resp.Error)
	}
	return &resp, nil
}
