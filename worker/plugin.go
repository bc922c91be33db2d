package main

import (
	"context"

	"github.com/gptoss/server/shared/plugin"
)

// pluginService answers the go-plugin host (the coordinator's launcher):
// who this worker is, whether it is alive, and a way to stop it.
type pluginService struct{ w *worker }

func (p pluginService) Describe(context.Context) (*plugin.Description, error) {
	r := p.w.registration()
	return &plugin.Description{WorkerId: r.WorkerId, Rank: r.Rank, WorldSize: r.WorldSize, Device: r.Device,
		Version: r.Version, Pid: r.Pid}, nil
}

func (p pluginService) Health(context.Context) (*plugin.HealthReply, error) {
	state, errMsg := p.w.getState()
	return &plugin.HealthReply{State: state, Steps: p.w.steps.Load(), Error: errMsg}, nil
}

func (p pluginService) Shutdown(context.Context) error {
	p.w.drain()
	p.w.requestExit(exitReq{code: 0, drain: true, reason: "shutdown requested by the plugin host"})
	return nil
}
