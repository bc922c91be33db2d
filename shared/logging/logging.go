// Package logging builds the zap loggers of every process in the project so
// that the coordinator and the workers write the same structured format: JSON
// when stderr is not a terminal (systemd, containers, CI), human-readable
// console lines when it is.
package logging

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a logger at the given level ("debug", "info", "warn", "error")
// in the given format ("json", "console" or "auto"). Logs go to stderr:
// stdout is reserved for the go-plugin handshake in workers.
func New(level, format string) (*zap.Logger, error) {
	return NewTo(level, format, os.Stderr, StderrIsTerminal())
}

// StderrIsTerminal reports whether stderr is a terminal: console logs and
// progress bars there, JSON lines and periodic progress logs elsewhere.
func StderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewTo is New writing to w (a progress display that keeps its bars below
// the log, for one); tty picks the format "auto" means.
func NewTo(level, format string, w io.Writer, tty bool) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("logging: %w", err)
	}
	if format == "" || format == "auto" {
		format = "json"
		if tty {
			format = "console"
		}
	}
	encCfg := zap.NewProductionEncoderConfig()
	encCfg.TimeKey = "ts"
	encCfg.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	switch format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalColorLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, fmt.Errorf("logging: unknown format %q (want json, console or auto)", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.AddCaller()), nil
}

// RedactURL hides the credentials (user and password, or a token in the
// user field) of every URL of a comma-separated list, such as a NATS
// server list, for logs. Text that does not parse as a URL is kept.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}
