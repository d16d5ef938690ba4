package e2e

import (
	"bytes"
	"encoding/json"
	"google.golang.org/protobuf/proto"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// TestInvocationsCLI runs `sidecar invocations ...` against the main outbound sidecar.
func TestInvocationsCLI(t *testing.T) {
	ctx := testCtx(t)
	idem := uniq(t, "cli")
	_, hdr, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: idem}, "idempotency-key", idem)
	if err != nil {
		t.Fatal(err)
	}
	id := header(hdr, idHeader)
	addr := env.out.OutboundAddr().String()
	run := func(args ...string) (string, string, int) {
		cmd := exec.Command(filepath.Join(env.bin, "sidecar"), append([]string{"invocations"}, args...)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout *regexp.Regexp
		stderr string
	}{
		{"lookup a call", []string{"lookup", "-addr", addr, "-service", "rgtest.v1.Echo", "-handler", "Call", "-idempotency-key", idem},
			0, regexp.MustCompile(`^invocation  ` + id + `\n$`), ""},
		{"attach by id", []string{"attach", "-addr", addr, id},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     \d+ bytes\n            0a [0-9a-f ]+\n`), ""},
		{"output decoded with the app's reflection", []string{"output", "-addr", addr, "-reflect", env.appAddr, "-service", "rgtest.v1.Echo", "-handler", "Call", "-idempotency-key", idem},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     rgtest.v1.Resp\n\{\n  "text": +"` + idem + `",\n`), ""},
		{"attach by id decoded with a descriptor set", []string{"attach", "-addr", addr, "-descriptor-set", filepath.Join(env.dir, "test.pb"), "-method", "rgtest.v1.Echo/Call", id},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     rgtest.v1.Resp\n\{\n  "text": +"` + idem + `",\n`), ""},
		{"by id, its method read from the admin API", []string{"attach", "-addr", addr, "-proto-set", filepath.Join(env.dir, "test.pb"), id},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     rgtest.v1.Resp\n\{\n  "text": +"` + idem + `",\n`), ""},
		{"by id through a sidecar without outbound.admin", []string{"attach", "-addr", env.plain.OutboundAddr().String(), "-proto-set", filepath.Join(env.dir, "test.pb"), id},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     \d+ bytes\n            0a `), "payload not decoded: its method is not known (the sidecar has no outbound.admin to read it from): name it with --method"},
		{"a method the descriptors lack", []string{"attach", "-addr", addr, "-reflect", env.appAddr, "-method", "/rgtest.v1.Missing/Call", id},
			0, regexp.MustCompile(`^invocation  ` + id + `\npayload     \d+ bytes\n`), "payload not decoded: server reflection for rgtest.v1.Missing"},
		{"output of an unknown id", []string{"output", "-addr", addr, "inv_1dulJCO0YId82jI7FnElglZwS7eO9Mjr3e"},
			1, regexp.MustCompile(`^$`), "NotFound: restate: invocation not found"},
		{"cancel a finished invocation", []string{"cancel", "-addr", addr, id},
			1, regexp.MustCompile(`^$`), "FailedPrecondition: restate: invocation " + id + " has already completed"},
		{"no target", []string{"attach", "-addr", addr},
			2, regexp.MustCompile(`^$`), "name an invocation"},
		{"unknown verb", []string{"frobnicate", "-addr", addr, id},
			2, regexp.MustCompile(`^$`), "usage: sidecar invocations"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := run(tc.args...)
			if code != tc.code || !tc.stdout.MatchString(out) || !strings.Contains(errOut, tc.stderr) {
				t.Errorf("sidecar invocations %s:\nexit %d, want %d\nstdout %q, want %s\nstderr %q, want %q",
					strings.Join(tc.args, " "), code, tc.code, out, tc.stdout, errOut, tc.stderr)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		out, _, code := run("output", "-addr", addr, "-json", id)
		var got struct {
			InvocationID string `json:"invocationId"`
			Payload      []byte `json:"payload"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &got) != nil || got.InvocationID != id || len(got.Payload) == 0 {
			t.Errorf("output -json: exit %d, %q", code, out)
		}
		var resp testpb.Resp
		if err := proto.Unmarshal(got.Payload, &resp); err != nil || resp.GetText() != idem {
			t.Errorf("payload decodes to %v (%v), want the Echo answer %q", &resp, err, idem)
		}
	})
	t.Run("json decoded", func(t *testing.T) {
		out, errOut, code := run("output", "-addr", addr, "-json", "-reflect", env.appAddr, "-method", "/rgtest.v1.Echo/Call", id)
		var got struct {
			InvocationID string `json:"invocationId"`
			Type         string `json:"type"`
			Payload      struct {
				Text string `json:"text"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.InvocationID != id || got.Type != "rgtest.v1.Resp" || got.Payload.Text != idem {
			t.Errorf("output -json -reflect: exit %d, stdout %q (%v), stderr %q; want invocation %s, type rgtest.v1.Resp, payload.text %q", code, out, err, errOut, id, idem)
		}
	})
}

// TestVersion: a build stamped as make build stamps it prints its version and commit.
func TestVersion(t *testing.T) {
	out, err := exec.Command(filepath.Join(env.bin, "sidecar"), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "sidecar " + stampVersion + " (commit " + stampCommit + ") go"
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("sidecar version printed %q, want it to start with %q", out, want)
	}
}
