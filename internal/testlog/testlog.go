// Package testlog is a log buffer for tests that read what a server's goroutines log.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer is an io.Writer for a slog handler, written by a server's goroutines and read by the
// test's (which the race detector cannot see ordered by a call's answer).
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Take returns what was written and empties the buffer.
func (b *Buffer) Take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.buf.Reset()
	return b.buf.String()
}
