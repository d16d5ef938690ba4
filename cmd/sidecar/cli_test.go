package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the output")

func sidecarCLI(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = execute(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestCLI(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a part of it
		stderr string // a part of it
	}{
		{"help", []string{"--help"}, 0, "Available Commands:\n  check", ""},
		{"help names every command", []string{"-h"}, 0, "iptables    Write the nat rules", ""},
		{"help command", []string{"help", "iptables"}, 0, "--exclude-ports ports", ""},
		{"run help", []string{"run", "--help"}, 0, "--procs int", ""},
		{"run help, single dash", []string{"run", "-help"}, 0, "--log-level string", ""},
		{"check help", []string{"check", "--help"}, 0, "--config string", ""},
		{"invocations help", []string{"invocations", "--help"}, 0, "--idempotency-key", ""},
		{"invocations cancel help", []string{"invocations", "cancel", "--help"}, 0, "sidecar invocations cancel [INVOCATION_ID] [flags]", ""},
		{"iptables help", []string{"iptables", "--help"}, 0, "--to-port uint16", ""},
		{"version", []string{"version"}, 0, "(commit ", ""},
		{"check a config", []string{"check", "-config", "../../examples/orders/orders-sidecar.yaml"}, 0, "inbound:\n  app: ", ""},
		{"check a config, double dash", []string{"check", "--config=../../examples/orders/orders-sidecar.yaml"}, 0, "inbound:\n  app: ", ""},

		{"no command", nil, 2, "", "sidecar: a command is required\nusage: sidecar"},
		{"unknown command", []string{"frobnicate"}, 2, "", `sidecar: unknown command "frobnicate" for "sidecar"`},
		{"unknown flag", []string{"run", "--bogus"}, 2, "", "sidecar run: unknown flag: --bogus\nusage: sidecar run"},
		{"unknown single-dash flag", []string{"check", "-bogus"}, 2, "", "sidecar check: unknown shorthand flag: 'b' in -bogus"},
		{"flag without its value", []string{"run", "-config"}, 2, "", "flag needs an argument: --config"},
		{"no config", []string{"run"}, 2, "", "sidecar run: --config or --annotations is required"},
		{"config and annotations", []string{"run", "--config", "x.yaml", "--annotations", "y"}, 2, "", "[annotations config] were all set"},
		{"annotations missing", []string{"check", "--annotations", "nosuch"}, 1, "", "sidecar check: open nosuch"},
		{"check annotations", []string{"check", "--annotations", "testdata/annotations"}, 0, "outbound:\n  access: {}\n  admin: http://restate:9070\n", ""},
		{"bad annotations", []string{"check", "--annotations", "testdata/annotations-bad"}, 1, "", `restate-grpc.io/log-level: logLevel: "loud" is not one of debug, info, warn, error`},
		{"inject help", []string{"inject", "--help"}, 0, "--kube-version string", ""},
		{"inject", []string{"inject", "--config", "testdata/injector.yaml", "-f", "../../internal/injector/testdata/inject/plain.yaml"}, 0, "restate-grpc.io/status: injected", ""},
		{"inject bad annotations", []string{"inject", "--config", "testdata/injector.yaml", "-f", "../../internal/injector/testdata/inject/bad-route.yaml"}, 1, "", `sidecar inject: document 1: Pod checkout: restate-grpc.io/outbound: outbound.routes[0].target: "objekt" is not one of`},
		{"inject without an ingress", []string{"inject", "-f", "../../internal/injector/testdata/inject/plain.yaml"}, 1, "", "restate-grpc.io/ingress-url: outbound.ingress: required: a URL such as http://restate:8080"},
		{"inject bad config", []string{"inject", "--config", "testdata/annotations-bad", "-f", "-"}, 1, "", "invalid injector config: error unmarshaling JSON"},
		{"inject bad kube version", []string{"inject", "--kube-version", "new", "-f", "x"}, 2, "", "--kube-version: want MAJOR.MINOR"},
		{"injector help", []string{"injector", "--help"}, 0, "--tls-cert-dir string", ""},
		{"injector without a certificate", []string{"injector", "--namespace", "x"}, 2, "", "at least one of the flags in the group [tls-cert-dir self-signed] is required"},
		{"injector with two certificates", []string{"injector", "--self-signed", "--tls-cert-dir", "d"}, 2, "", "[self-signed tls-cert-dir] were all set"},
		{"injector without a namespace", []string{"injector", "--self-signed", "--namespace", ""}, 2, "", "--namespace (or POD_NAMESPACE) is required"},
		{"injector bad config", []string{"injector", "--self-signed", "--namespace", "x", "--config", "testdata/annotations-bad"}, 1, "", "invalid injector config"},
		{"wait help", []string{"wait", "--help"}, 0, "--timeout duration", ""},
		{"wait for nothing", []string{"wait", "--health", "127.0.0.1:1", "--timeout", "300ms"}, 1, "", "sidecar wait: the sidecar is not ready: "},
		{"status help", []string{"status", "--help"}, 0, "prints:\n  - its readiness, and each check /readyz lists", ""},
		{"status of nothing", []string{"status", "--health", "127.0.0.1:1", "--timeout", "300ms"}, 1, "", "sidecar status: the sidecar's health port does not answer (is --health its address?)"},
		{"argument to status", []string{"status", "extra"}, 2, "", `unknown command "extra" for "sidecar status"`},
		{"completion", []string{"completion", "bash"}, 0, "# bash completion V2 for sidecar", ""},
		{"completion help", []string{"completion", "--help"}, 0, "Available Commands:\n  bash", ""},
		{"bad log level", []string{"run", "-log-level", "loud", "-config", "x.yaml"}, 2, "", "--log-level: "},
		{"bad log format", []string{"run", "--log-format", "yaml", "--config", "x.yaml"}, 2, "", `--log-format: "yaml" is not one of text, json`},
		{"config missing", []string{"check", "-config", "nosuch.yaml"}, 1, "", "sidecar check: "},
		{"argument to run", []string{"run", "extra"}, 2, "", `unknown command "extra" for "sidecar run"`},
		{"invocations without a verb", []string{"invocations"}, 2, "", "a verb is required"},
		{"invocations unknown verb", []string{"invocations", "frobnicate", "-addr", "127.0.0.1:1", "inv_1"}, 2, "", "usage: sidecar invocations"},
		{"invocations without a target", []string{"invocations", "attach", "-addr", "127.0.0.1:1"}, 2, "", "name an invocation"},
		{"invocations two ids", []string{"invocations", "kill", "inv_1", "inv_2"}, 2, "", "accepts at most 1 arg(s), received 2"},
		{"iptables bad port", []string{"iptables", "--ports", "50051,http"}, 2, "", `"http" is not a TCP port`},
		{"iptables bad backend", []string{"iptables", "--backend", "nftables", "--dry-run"}, 2, "", `--backend: iptables: backend "nftables" is not one of auto, nft, legacy`},
		{"iptables no to-port", []string{"iptables", "--to-port", "0", "--dry-run"}, 2, "", "to-port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := sidecarCLI(t, tt.args...)
			if code != tt.code || !strings.Contains(out, tt.stdout) || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("sidecar %s:\nexit %d, want %d\nstdout %q, want it to hold %q\nstderr %q, want it to hold %q",
					strings.Join(tt.args, " "), code, tt.code, out, tt.stdout, errOut, tt.stderr)
			}
		})
	}
}

func TestLongFlags(t *testing.T) {
	tests := []struct {
		in, want []string
	}{
		{[]string{"run", "-config", "c.yaml", "-health=:1", "-procs", "-1"}, []string{"run", "--config", "c.yaml", "--health=:1", "--procs", "-1"}},
		{[]string{"invocations", "attach", "-addr", "a", "-json", "inv_1"}, []string{"invocations", "attach", "--addr", "a", "--json", "inv_1"}},
		{[]string{"invocations", "lookup", "-key", "-k", "-service", "s"}, []string{"invocations", "lookup", "--key", "-k", "--service", "s"}},
		{[]string{"invocations", "lookup", "--key", "-k"}, []string{"invocations", "lookup", "--key", "-k"}},
		{[]string{"iptables", "-ports", "1,2", "-dry-run", "-h"}, []string{"iptables", "--ports", "1,2", "--dry-run", "-h"}},
		{[]string{"run", "-bogus", "--", "-config"}, []string{"run", "-bogus", "--", "-config"}},
		{[]string{"-config", "run"}, []string{"-config", "run"}}, // not a flag of the root: left to pflag to refuse
	}
	for _, tt := range tests {
		if got := longFlags(newRoot(nil, nil), tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("longFlags(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestIptablesDryRun pins the rules `sidecar iptables` writes for each set of flags to
// testdata/iptables-NAME.golden; `go test -update` rewrites them.
func TestIptablesDryRun(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"defaults", nil},
		{"ports", []string{"--ports", "50051,8080"}},
		{"ports-repeated-and-excluded", []string{"--ports", "8080", "--ports", "50051,9080", "--exclude-ports", "8080"}},
		{"all-but-excluded", []string{"--exclude-ports", "5432,6379", "--to-port", "15006", "--proxy-uid", "2102"}},
		{"no-inbound-or-health", []string{"--inbound-port", "0", "--health-port", "0"}},
		{"nft-ipv4-only", []string{"--backend", "nft", "--ipv6=false"}},
		{"cleanup-legacy", []string{"--cleanup", "--backend", "legacy"}},
		{"single-dash", []string{"-ports", "50051", "-backend", "nft"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := sidecarCLI(t, append([]string{"iptables", "--dry-run"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("sidecar iptables --dry-run %s: exit %d, %s", strings.Join(tt.args, " "), code, errOut)
			}
			golden := filepath.Join("testdata", "iptables-"+tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -update writes it)", err)
			}
			if out != string(want) {
				t.Errorf("sidecar iptables --dry-run %s:\n%s\nwant (%s):\n%s", strings.Join(tt.args, " "), out, golden, want)
			}
		})
	}
}
