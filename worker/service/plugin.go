package service

import (
	"context"

	"github.com/gptoss/server/shared/plugin"
)

// The go-plugin host (the coordinator's launcher) asks a worker it started
// who it is, whether it is alive, and to stop: Service implements the
// plugin contract directly.
var _ plugin.Service = (*Service)(nil)

// Describe reports who this worker is (its registration).
func (w *Service) Describe(context.Context) (*plugin.Description, error) {
	r := w.registration()
	return &plugin.Description{WorkerId: r.WorkerId, Rank: r.Rank, WorldSize: r.WorldSize, Device: r.Device,
		Version: r.Version, Pid: r.Pid}, nil
}

// Health reports the worker's state.
func (w *Service) Health(context.Context) (*plugin.HealthReply, error) {
	state, errMsg := w.st.Report()
	return &plugin.HealthReply{State: state.String(), Steps: w.steps.Load(), Error: errMsg}, nil
}

// Shutdown drains and ends Run, as a "shutdown" control message does.
func (w *Service) Shutdown(context.Context) error {
	w.drain()
	w.requestExit(exitReq{code: 0, drain: true, reason: "shutdown requested by the plugin host"})
	return nil
}
