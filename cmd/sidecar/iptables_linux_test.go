package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/restate-grpc/restate-grpc/internal/testenv"
)

// TestMain runs the test binary as the sidecar command when asked to, so a test can run the
// command in another process (as another uid).
func TestMain(m *testing.M) {
	if os.Getenv("RESTATE_GRPC_TEST_MAIN") == "1" {
		os.Exit(execute(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestIptablesApply runs `sidecar iptables` in a network namespace it makes: what iptables-save
// shows afterwards is what --dry-run printed, a second run changes nothing, --cleanup leaves no
// trace, and run as a uid without NET_ADMIN it says what the init container needs. It needs
// root, ip and iptables (`make test` installs them where missing; CI runs as root).
func TestIptablesApply(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestIptablesApply makes a network namespace and writes iptables rules in it, which needs root: run the tests as root, as CI does")
	}
	ip := testenv.Tool(t, "ip")
	ns := fmt.Sprintf("rg-ipt-%d-cli", os.Getpid())
	testenv.RunTool(t, ip, "netns", "add", ns)
	t.Cleanup(func() { testenv.RunTool(t, ip, "netns", "delete", ns) })

	// No --backend: auto, which picks nft in a new namespace, where neither backend holds rules.
	flags := []string{"iptables", "-ports", "50051,8080", "-exclude-ports", "5432"}
	dry, _, code := sidecarCLI(t, append(flags, "--dry-run")...)
	if code != 0 {
		t.Fatalf("sidecar %s --dry-run: exit %d", strings.Join(flags, " "), code)
	}
	want := ruleLines(dry)
	for range 2 {
		var out, errOut string
		inNS(t, ns, func() error { out, errOut, code = sidecarCLI(t, flags...); return nil })
		if code != 0 || !strings.Contains(out, "wrote the RESTATE_GRPC_OUTPUT rules (nft backend)") {
			t.Fatalf("sidecar %s: exit %d, stdout %q, stderr %q; want exit 0 and what it wrote", strings.Join(flags, " "), code, out, errOut)
		}
		if got := savedRules(t, ns); !slices.Equal(got, want) {
			t.Fatalf("iptables-save -t nat after sidecar %s:\n%s\nwant what --dry-run printed:\n%s", strings.Join(flags, " "), strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}

	t.Run("without NET_ADMIN", func(t *testing.T) {
		exe := testBinaryCopy(t)
		cmd := exec.Command(exe, "iptables", "--cleanup")
		cmd.Env = append(os.Environ(), "RESTATE_GRPC_TEST_MAIN=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1337, Gid: 1337}}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		var err error
		inNS(t, ns, func() error { err = cmd.Run(); return nil })
		code := -1
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != 1 || !strings.Contains(errb.String(), "needs CAP_NET_ADMIN and CAP_NET_RAW") || !strings.Contains(errb.String(), "init container needs securityContext.capabilities.add [NET_ADMIN, NET_RAW]") {
			t.Errorf("sidecar iptables --cleanup as uid 1337: %v, stderr %q; want exit 1 saying the init container needs NET_ADMIN and NET_RAW", err, errb.String())
		}
	})

	for range 2 { // the second finds nothing to remove
		var out, errOut string
		inNS(t, ns, func() error {
			out, errOut, code = sidecarCLI(t, "iptables", "--cleanup")
			return nil
		})
		if code != 0 {
			t.Fatalf("sidecar iptables --cleanup: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		if got := savedRules(t, ns); len(got) != 0 {
			t.Errorf("iptables-save -t nat after sidecar iptables --cleanup:\n%s\nwant no trace", strings.Join(got, "\n"))
		}
	}
}

// ruleLines returns the chain and rule lines of iptables-restore input or iptables-save
// output that name our chain, in order.
func ruleLines(s string) []string {
	var lines []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); strings.Contains(line, "RESTATE_GRPC_OUTPUT") && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return lines
}

// savedRules returns our lines of iptables-save and ip6tables-save -t nat in ns.
func savedRules(t *testing.T, ns string) []string {
	t.Helper()
	var lines []string
	for _, save := range []string{"iptables-nft-save", "ip6tables-nft-save"} {
		out, err := exec.Command(testenv.Tool(t, "ip"), "netns", "exec", ns, testenv.Tool(t, save), "-t", "nat").CombinedOutput()
		if err != nil {
			t.Fatalf("%s in %s: %v\n%s", save, ns, err, out)
		}
		// iptables-save prints the jump before the chain's rules; --dry-run prints it last.
		got := ruleLines(string(out))
		jumps := slices.DeleteFunc(slices.Clone(got), func(l string) bool { return !strings.HasPrefix(l, "-A OUTPUT ") })
		rest := slices.DeleteFunc(got, func(l string) bool { return strings.HasPrefix(l, "-A OUTPUT ") })
		lines = append(append(lines, rest...), jumps...)
	}
	return lines
}

// testBinaryCopy copies the test binary where another uid may run it.
func testBinaryCopy(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: its parent directory is for the test's uid only.
	dir, err := os.MkdirTemp("", "rg-sidecar-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, "sidecar")
	dst, err := os.OpenFile(exe, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}

// inNS runs f in the network namespace ns and fails the test if it fails.
func inNS(t *testing.T, ns string, f func() error) {
	t.Helper()
	if err := testenv.InNetns(ns, f); err != nil {
		t.Fatal(err)
	}
}
