package service

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/gptoss/server/shared/model"
	"github.com/gptoss/server/shared/testkit"
	"github.com/gptoss/server/shared/wire"
	"github.com/gptoss/server/worker/engine"
)

// tinyCheckpoint writes the tiny architecture at a small vocabulary and
// two layers: every tensor kind of gpt-oss, quickly.
func tinyCheckpoint(t *testing.T) string {
	t.Helper()
	cfg := model.Presets["tiny"].Architecture()
	cfg.Vocab, cfg.Layers = 512, 2
	dir := filepath.Join(t.TempDir(), "tiny-512")
	if err := engine.WriteCheckpoint(dir, engine.DummyWeights(cfg, 42, 0)); err != nil {
		t.Fatal(err)
	}
	return dir
}

func newTestService(t *testing.T, format string, heartbeat time.Duration) *Service {
	t.Helper()
	w, err := New(Options{
		NATSURL: "nats://127.0.0.1:4222", Deployment: "progress", WorldSize: 1, WorkerID: "w0",
		Heartbeat: heartbeat, CoordinatorTimeout: time.Minute, StepTimeout: time.Minute,
		Backend: BackendCPU, GPUMemoryUtilization: 0.9, LoadFormat: format,
	}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// Reading the weights hands out every tensor of the checkpoint: the
// progress reaches the total, which is the size of all the tensors' data,
// and the heartbeat carries it while the state is Loading only.
func TestLoadProgress(t *testing.T) {
	dir := tinyCheckpoint(t)
	w := newTestService(t, LoadAuto, time.Second)
	if done, total := w.loadProgress(); done != 0 || total != 0 {
		t.Fatalf("before a load: progress %d of %d", done, total)
	}
	cfg, _, err := w.modelConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, weights, err := w.readWeights(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if weights == nil {
		t.Fatal("no weights")
	}
	done, total := w.loadProgress()
	if total <= 0 || done != total {
		t.Fatalf("after reading the weights: progress %d of %d bytes", done, total)
	}
	var sum int64
	for _, n := range set.Names() {
		tt, err := set.Tensor(n)
		if err != nil {
			t.Fatal(err)
		}
		sum += int64(len(tt.Data))
	}
	if total != sum || set.BytesRead() != sum {
		t.Errorf("total %d, read %d: want both the %d bytes of the checkpoint's tensors", total, set.BytesRead(), sum)
	}

	w.st.SetPhase(Loading, "")
	if h := w.heartbeatMsg(); h.State != "loading" || h.LoadBytesDone != sum || h.LoadBytesTotal != sum {
		t.Errorf("heartbeat while loading: %s, %d of %d bytes", h.State, h.LoadBytesDone, h.LoadBytesTotal)
	}
	w.st.SetPhase(Ready, "")
	if h := w.heartbeatMsg(); h.State != "ready" || h.LoadBytesDone != 0 || h.LoadBytesTotal != 0 {
		t.Errorf("heartbeat when ready: %s, %d of %d bytes", h.State, h.LoadBytesDone, h.LoadBytesTotal)
	}
}

// A whole Load ends with no progress left in the heartbeats; dummy
// weights have none to report.
func TestLoadProgressCleared(t *testing.T) {
	dir := tinyCheckpoint(t)
	for _, format := range []string{LoadAuto, LoadDummy} {
		w := newTestService(t, format, time.Second)
		res := w.doLoad(&wire.Load{ModelDir: dir, Tp: 1, KvBlocks: 8, SlidingBlocks: 8, BlockSize: 16})
		if res.Error != "" {
			t.Fatalf("%s: load: %s", format, res.Error)
		}
		h := w.heartbeatMsg()
		if h.State != "ready" || h.LoadBytesDone != 0 || h.LoadBytesTotal != 0 {
			t.Errorf("%s: heartbeat after the load: %s, %d of %d bytes", format, h.State, h.LoadBytesDone, h.LoadBytesTotal)
		}
		if w.loadSet.Load() != nil {
			t.Errorf("%s: the load's set is still reported", format)
		}
		w.unload()
	}
}

// With a heartbeat interval longer than loadHeartbeat, a Load still sends
// its progress every loadHeartbeat.
func TestLoadHeartbeats(t *testing.T) {
	dir := tinyCheckpoint(t)
	srv := testkit.NATS(t)
	w := newTestService(t, LoadAuto, time.Hour)
	w.nc = testkit.Connect(t, srv)
	sub := testkit.Connect(t, srv)
	beats := make(chan *wire.Heartbeat, 16)
	if _, err := sub.Subscribe(w.subj.Heartbeat(), func(m *nats.Msg) {
		var h wire.Heartbeat
		if err := wire.Unmarshal(m.Data, &h); err != nil {
			t.Error(err)
			return
		}
		beats <- &h
	}); err != nil {
		t.Fatal(err)
	}
	if err := sub.Flush(); err != nil {
		t.Fatal(err)
	}

	cfg, _, err := w.modelConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, _, err := w.readWeights(cfg, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	w.st.SetPhase(Loading, "")
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.watchLoad(stop, time.Now(), zap.NewNop())
	}()
	defer func() {
		close(stop)
		<-done
	}()
	select {
	case h := <-beats:
		if h.State != "loading" || h.LoadBytesTotal != set.TotalBytes() || h.LoadBytesDone != set.BytesRead() {
			t.Errorf("heartbeat: %s, %d of %d bytes; want loading, %d of %d", h.State, h.LoadBytesDone, h.LoadBytesTotal,
				set.BytesRead(), set.TotalBytes())
		}
	case <-time.After(5 * loadHeartbeat):
		t.Fatalf("no heartbeat within %s of the load's start", 5*loadHeartbeat)
	}
}
