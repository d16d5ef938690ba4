package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Backend is the kernel interface iptables drives: nf_tables or the legacy x_tables. Rules
// written through one are invisible to the other, so the one the host already uses matters.
type Backend string

const (
	NFT    Backend = "nft"
	Legacy Backend = "legacy"
	// Auto picks the backend that holds rules now, nft when neither or both do (Detect).
	Auto Backend = "auto"
)

// ParseBackend parses auto, nft or legacy.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case Auto, NFT, Legacy:
		return b, nil
	}
	return "", fmt.Errorf("iptables: backend %q is not one of auto, nft, legacy", s)
}

// Binary names the backend's tool for a family, e.g. ip6tables-legacy-restore.
func (b Backend) Binary(f Family, tool string) string {
	name := "iptables"
	if f == IPv6 {
		name = "ip6tables"
	}
	return name + "-" + string(b) + "-" + tool
}

// ErrPrivilege says the process may not change the network namespace's rules.
var ErrPrivilege = errors.New("iptables: writing nat rules needs CAP_NET_ADMIN and CAP_NET_RAW: run it as root; in Kubernetes the init container needs securityContext.capabilities.add [NET_ADMIN, NET_RAW]")

// Linux capability bits (linux/capability.h).
const (
	capNetAdmin = 12
	capNetRaw   = 13
)

// checkPrivilege fails with ErrPrivilege when the effective capabilities lack NET_ADMIN or
// NET_RAW: iptables would fail anyway, with a message that names neither.
func checkPrivilege() error {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return fmt.Errorf("iptables: reading capabilities: %w", err)
	}
	eff, err := capEff(string(b))
	if err != nil {
		return err
	}
	if eff&(1<<capNetAdmin) == 0 || eff&(1<<capNetRaw) == 0 {
		return ErrPrivilege
	}
	return nil
}

// capEff reads the CapEff line of /proc/PID/status.
func capEff(status string) (uint64, error) {
	for line := range strings.Lines(status) {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return 0, fmt.Errorf("iptables: capabilities %q: %w", strings.TrimSpace(v), err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("iptables: no CapEff in /proc/self/status")
}

// Options says how rules are applied.
type Options struct {
	Backend  Backend  // Auto when empty
	Families []Family // IPv4 and IPv6 when empty
}

func (o Options) families() []Family {
	if len(o.Families) == 0 {
		return []Family{IPv4, IPv6}
	}
	return o.Families
}

// Apply writes r for each family through the backend, one iptables-restore transaction each,
// and returns the backend used. Running it again with the same rules changes nothing.
func Apply(ctx context.Context, r Rules, o Options) (Backend, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	b, err := prepare(ctx, o)
	if err != nil {
		return "", err
	}
	for _, f := range o.families() {
		save, err := run(ctx, b.Binary(f, "save"), nil, "-t", "nat")
		if err != nil {
			return b, err
		}
		if _, err := run(ctx, b.Binary(f, "restore"), []byte(r.Restore(f, parseSave(save).jumps)), "--noflush"); err != nil {
			if f == IPv6 {
				// A kernel without IPv6 has no ip6tables nat table.
				return b, fmt.Errorf("%w (without IPv6 in the kernel, skip it with --ipv6=false)", err)
			}
			return b, err
		}
	}
	return b, nil
}

// Remove deletes Chain and the OUTPUT jumps to it for each family; where there are none it
// does nothing. It returns the backend used.
func Remove(ctx context.Context, o Options) (Backend, error) {
	b, err := prepare(ctx, o)
	if err != nil {
		return "", err
	}
	for _, f := range o.families() {
		save, err := run(ctx, b.Binary(f, "save"), nil, "-t", "nat")
		if err != nil {
			return b, err
		}
		if in := RemoveRestore(save); in != "" {
			if _, err := run(ctx, b.Binary(f, "restore"), []byte(in), "--noflush"); err != nil {
				return b, err
			}
		}
	}
	return b, nil
}

// prepare checks the privileges and resolves Auto.
func prepare(ctx context.Context, o Options) (Backend, error) {
	if err := checkPrivilege(); err != nil {
		return "", err
	}
	if o.Backend == "" || o.Backend == Auto {
		return Detect(ctx, o.families())
	}
	return o.Backend, nil
}

// Detect picks the backend in use as linkerd-init and Kubernetes' iptables-wrappers do: the
// one whose save output (all tables, every family) holds more rules; nft, the default of
// current distributions, when they hold as many (a new pod's namespace holds none). A backend
// whose tools fail (missing, or its kernel modules absent) holds no rules.
func Detect(ctx context.Context, families []Family) (Backend, error) {
	count := map[Backend]int{}
	var errs []error
	for _, b := range []Backend{NFT, Legacy} {
		for _, f := range families {
			save, err := run(ctx, b.Binary(f, "save"), nil)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			for line := range strings.Lines(save) {
				if strings.HasPrefix(line, "-A ") {
					count[b]++
				}
			}
		}
	}
	if len(errs) == 2*len(families) {
		return "", fmt.Errorf("iptables: no backend works: %w", errors.Join(errs...))
	}
	if count[Legacy] > count[NFT] {
		return Legacy, nil
	}
	return NFT, nil
}

// run runs an iptables tool with stdin and returns its standard output.
func run(ctx context.Context, name string, stdin []byte, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if strings.Contains(msg, "Permission denied") || strings.Contains(msg, "Operation not permitted") {
			return "", fmt.Errorf("%s: %s: %w", name, msg, ErrPrivilege)
		}
		return "", fmt.Errorf("iptables: %s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return out.String(), nil
}

// lookPath finds a tool on PATH or in the sbin directories, where distributions put iptables
// and where a container's PATH may not look.
func lookPath(name string) (string, error) {
	for _, p := range []string{name, "/usr/sbin/" + name, "/sbin/" + name} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", fmt.Errorf("iptables: %s not found: install iptables 1.8 or later (Debian, Ubuntu: apt-get install -y iptables; Alpine: apk add iptables; Fedora: dnf install iptables-nft iptables-legacy), which has both backends", name)
}
