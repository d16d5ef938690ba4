package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/restate-grpc/restate-grpc/internal/iptables"
)

func iptablesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "iptables",
		Short: "Write the nat rules that redirect the pod's outbound TCP to the sidecar (iptables interception)",
		Long: `Write the nat rules that redirect the pod's outbound TCP connections to the sidecar's outbound
listener, for IPv4 and IPv6, as an init container does before the app starts. It needs
NET_ADMIN and NET_RAW.

The rules live in the nat chain ` + iptables.Chain + `, jumped to once from OUTPUT for TCP: applying
them again replaces the chain's rules, and --cleanup removes the chain and the jump. Never
captured: connections of the sidecar's own uid (--proxy-uid), to loopback (out lo, to
127.0.0.0/8 or ::1), to the inbound and health ports, and to --exclude-ports. Captured: the
--ports listed, or, when none are, every other TCP port. See them with iptables-save -t nat.`,
		Example: `  sidecar iptables --ports 50051,8080
  sidecar iptables --exclude-ports 5432 --dry-run
  sidecar iptables --cleanup`,
		Args: cobra.NoArgs,
	}
	var ports, exclude portList
	f := cmd.Flags()
	f.Var(&ports, "ports", "outbound destination ports to capture (comma-separated); none: every TCP port")
	f.Var(&exclude, "exclude-ports", "outbound destination ports never captured (comma-separated)")
	toPort := f.Uint16("to-port", 15001, "the outbound listener's port, where captured connections go")
	proxyUID := f.Uint32("proxy-uid", 1337, "the sidecar's uid, whose own connections are never captured")
	inbound := f.Uint16("inbound-port", 9080, "the sidecar's inbound port, never captured; 0: none")
	health := f.Uint16("health-port", 15021, "the sidecar's health port, never captured; 0: none")
	backend := f.String("backend", "auto", "auto | nft | legacy; auto: the one that holds rules already, else nft")
	ipv6 := f.Bool("ipv6", true, "write the IPv6 rules too (ip6tables); false where the kernel has no IPv6")
	cleanup := f.Bool("cleanup", false, "remove the rules instead; nothing to remove is not an error")
	dryRun := f.Bool("dry-run", false, "print the iptables-restore input instead of applying it, as for a pod without the rules")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		b, err := iptables.ParseBackend(*backend)
		if err != nil {
			return usageError("--backend: %v", err)
		}
		r := iptables.Rules{Ports: ports, ExcludePorts: exclude, ToPort: *toPort, ProxyUID: *proxyUID}
		for _, p := range []uint16{*inbound, *health} {
			if p != 0 {
				r.ExcludePorts = append(r.ExcludePorts, p)
			}
		}
		if err := r.Validate(); err != nil {
			return usageError("%v", err)
		}
		o := iptables.Options{Backend: b, Families: []iptables.Family{iptables.IPv4}}
		if *ipv6 {
			o.Families = append(o.Families, iptables.IPv6)
		}
		out := cmd.OutOrStdout()
		if *dryRun {
			dryRunScript(out, r, o, *cleanup)
			return nil
		}
		if *cleanup {
			used, err := iptables.Remove(cmd.Context(), o)
			if err != nil {
				return failed(err)
			}
			fmt.Fprintf(out, "removed the %s rules (%s backend)\n", iptables.Chain, used)
			return nil
		}
		used, err := iptables.Apply(cmd.Context(), r, o)
		if err != nil {
			return failed(err)
		}
		fmt.Fprintf(out, "wrote the %s rules (%s backend); see them with %s -t nat\n", iptables.Chain, used, used.Binary(iptables.IPv4, "save"))
		return nil
	}
	return cmd
}

// dryRunScript prints, per family, the iptables-restore --noflush input that applies (or
// removes) the rules in a pod's network namespace without them.
func dryRunScript(w io.Writer, r iptables.Rules, o iptables.Options, cleanup bool) {
	backend := string(o.Backend)
	if o.Backend == iptables.Auto {
		backend = "BACKEND"
		fmt.Fprintln(w, "# BACKEND: the one that holds rules when applied (nft or legacy), else nft")
	}
	for _, f := range o.Families {
		fmt.Fprintf(w, "# %s: %s --noflush\n", f, iptables.Backend(backend).Binary(f, "restore"))
		if cleanup {
			// As for a pod that has the rules: its chain and one jump.
			fmt.Fprint(w, iptables.RemoveRestore(":"+iptables.Chain+" - [0:0]\n-A OUTPUT -p tcp -j "+iptables.Chain+"\n"))
		} else {
			fmt.Fprint(w, r.Restore(f, nil))
		}
	}
}

// portList is a flag of comma-separated TCP ports; given again, it adds to the list.
type portList []uint16

func (l *portList) String() string {
	s := make([]string, len(*l))
	for i, p := range *l {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
}

func (l *portList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			return fmt.Errorf("%q is not a TCP port (1-65535)", s)
		}
		*l = append(*l, uint16(p))
	}
	return nil
}

func (l *portList) Type() string { return "ports" }
