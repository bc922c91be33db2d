package service

import (
	"time"

	"go.uber.org/zap"
)

// loadHeartbeat is the longest gap between heartbeats while a Load runs,
// so that its progress moves smoothly on the coordinator's /health even
// when --heartbeat is longer.
const loadHeartbeat = time.Second

// loadLogEvery is the period of the "loading weights" log line: a long
// load shows in the log that it moves, a short one adds no line.
const loadLogEvery = 10 * time.Second

// loadProgress is the bytes of the checkpoint's tensors read so far and in
// all by the Load in progress; 0, 0 before its checkpoint is open, with
// dummy weights, and when no Load runs.
func (w *Service) loadProgress() (done, total int64) {
	if s := w.loadSet.Load(); s != nil {
		return s.BytesRead(), s.TotalBytes()
	}
	return 0, 0
}

// watchLoad reports the progress of the Load that started at start until
// stop is closed: a heartbeat every loadHeartbeat when the heartbeat
// ticker is slower, and a log line every loadLogEvery.
func (w *Service) watchLoad(stop <-chan struct{}, start time.Time, log *zap.Logger) {
	t := time.NewTicker(loadHeartbeat)
	defer t.Stop()
	lastLog := start
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			if w.opts.Heartbeat > loadHeartbeat {
				w.heartbeat()
			}
			if now.Sub(lastLog) < loadLogEvery {
				continue
			}
			lastLog = now
			done, total := w.loadProgress()
			fields := []zap.Field{zap.Duration("elapsed", now.Sub(start).Round(time.Second)),
				zap.Int64("bytes_done", done), zap.Int64("bytes_total", total)}
			if total > 0 {
				fields = append(fields, zap.Float64("percent", float64(int64(1000*float64(done)/float64(total)))/10))
			}
			log.Info("loading weights", fields...)
		}
	}
}
