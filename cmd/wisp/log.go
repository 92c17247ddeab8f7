package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// lineHandler prints log records the way wisp speaks on a terminal: one
// "wisp: message" line each. While the console holds the terminal in raw
// mode, the terminal no longer adds the carriage return, so the handler
// does (otherwise lines would stair-step across the screen).
type lineHandler struct {
	mu  *sync.Mutex
	w   io.Writer
	raw func() bool // nil: never raw
}

func newLineLogger(w io.Writer, raw func() bool) *slog.Logger {
	return slog.New(&lineHandler{mu: &sync.Mutex{}, w: w, raw: raw})
}

func (h *lineHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (h *lineHandler) Handle(_ context.Context, r slog.Record) error {
	end := "\n"
	if h.raw != nil && h.raw() {
		end = "\r\n"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, "wisp: "+r.Message+end)
	return err
}

// The VM's id and other attributes matter to a program managing many VMs,
// not on the terminal of the one VM wisp runs.
func (h *lineHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineHandler) WithGroup(string) slog.Handler      { return h }
