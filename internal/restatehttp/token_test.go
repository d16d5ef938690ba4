package restatehttp

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestTokenFileRotated: when the bearer token file is replaced (as Kubernetes rotates a
// projected token: a new file renamed over the old) or rewritten, the next request carries the
// new token; when it cannot be read, or is empty, the last good token goes on being sent.
func TestTokenFileRotated(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Values("Authorization")...)
		mu.Unlock()
		io.WriteString(w, `{"invocationId":"inv_1"}`)
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	write := func(tok string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	replace := func(tok string) {
		t.Helper()
		tmp := filepath.Join(dir, "token.new")
		if err := os.WriteFile(tmp, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("first\n")
	c, err := NewClient(srv.URL, Options{BearerTokenFile: file, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	c.token.every, c.token.next = 0, time.Time{} // look at the file on every request
	steps := []struct {
		name   string
		change func()
		want   string
	}{
		{"as read at the start", func() {}, "Bearer first"},
		{"replaced", func() { replace("second") }, "Bearer second"},
		{"rewritten in place", func() { write("third-token") }, "Bearer third-token"},
		{"removed", func() { os.Remove(file) }, "Bearer third-token"},
		{"back", func() { write("fourth") }, "Bearer fourth"},
		{"emptied", func() { write("") }, "Bearer fourth"},
		{"unchanged", func() {}, "Bearer fourth"},
	}
	for _, st := range steps {
		st.change()
		mu.Lock()
		got = got[:0]
		mu.Unlock()
		if _, err := c.Lookup(context.Background(), Ref{Workflow: &Target{Service: "a.B", Key: "k", Keyed: true}}); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		mu.Lock()
		if len(got) != 1 || got[0] != st.want {
			t.Errorf("%s: the server got Authorization %q, want [%q]", st.name, got, st.want)
		}
		mu.Unlock()
	}
}

// TestTokenFileRecheckBounded: the file is looked at again at most every TokenRecheck, so a
// busy client does not stat it on every request.
func TestTokenFileRecheckBounded(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	os.WriteFile(file, []byte("first"), 0o600)
	s, err := newTokenSource("", file, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, []byte("second"), 0o600)
	if got := s.get(); got != "first" {
		t.Errorf("right after the start: %q, want the token read then", got)
	}
	s.mu.Lock()
	s.next = time.Now() // the recheck is due
	s.mu.Unlock()
	if got := s.get(); got != "second" {
		t.Errorf("once the recheck is due: %q, want second", got)
	}
}

func TestTokenFileUnreadableAtStart(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if _, err := NewClient("http://r:8080", Options{BearerTokenFile: file}); err == nil {
		t.Error("NewClient with a missing token file succeeded")
	}
	os.WriteFile(file, nil, 0o600)
	if _, err := NewClient("http://r:8080", Options{BearerTokenFile: file}); err == nil {
		t.Error("NewClient with an empty token file succeeded")
	}
}
