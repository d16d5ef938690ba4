package restatehttp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// TokenRecheck is how often at most a bearer token file is looked at again: Kubernetes
// rotates projected service account tokens by replacing the file.
const TokenRecheck = 2 * time.Second

// tokenSource is the bearer token the client presents: fixed, or read from a file and read
// again when the file changes (its identity, size or modification time). A failed re-read
// never fails or holds a request: the last good token goes on being sent, and it is logged.
type tokenSource struct {
	file  string
	every time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	token   string
	info    os.FileInfo // of the file the token was read from
	next    time.Time   // the next look at the file
	lastErr string      // logged once until it changes
}

func newTokenSource(token, file string, log *slog.Logger) (*tokenSource, error) {
	s := &tokenSource{token: token, file: file, every: TokenRecheck, log: log}
	if file == "" {
		return s, nil
	}
	info, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("bearer token file: %w", err)
	}
	if s.token, err = readToken(file); err != nil {
		return nil, err
	}
	s.info, s.next = info, time.Now().Add(s.every)
	return s, nil
}

func readToken(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("bearer token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", errors.New("bearer token file " + file + " is empty")
	}
	return tok, nil
}

// get returns the token to send, reading the file again if it changed.
func (s *tokenSource) get() string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == "" {
		return s.token
	}
	now := time.Now()
	if now.Before(s.next) {
		return s.token
	}
	s.next = now.Add(s.every)
	info, err := os.Stat(s.file)
	if err == nil && os.SameFile(info, s.info) && info.Size() == s.info.Size() && info.ModTime().Equal(s.info.ModTime()) {
		return s.token
	}
	tok := ""
	if err == nil {
		tok, err = readToken(s.file)
	}
	if err != nil {
		if msg := err.Error(); msg != s.lastErr {
			s.lastErr = msg
			s.log.Warn("re-reading the bearer token file failed; sending the last token read", "file", s.file, "error", err)
		}
		return s.token
	}
	s.lastErr = ""
	if tok != s.token {
		s.log.Info("bearer token file changed; sending its new token", "file", s.file)
	}
	s.token, s.info = tok, info
	return s.token
}

// authorize sets req's Authorization to the client's bearer token, if it has one.
func (s *tokenSource) authorize(h http.Header) {
	if tok := s.get(); tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
}
