// Package iptables writes the nat rules that redirect a pod's outbound TCP to the sidecar's
// outbound listener (iptables interception), and removes them. The rules live in a chain of
// their own, Chain, jumped to once from OUTPUT, so applying them again gives the same rules
// and removing them leaves no trace. They are applied with iptables-restore --noflush, one
// atomic transaction per address family, through the nft or the legacy backend.
package iptables

import (
	"fmt"
	"slices"
	"strings"
)

// Chain is the nat chain that holds the rules; OUTPUT jumps to it for TCP.
const Chain = "RESTATE_GRPC_OUTPUT"

// jump is the OUTPUT rule that sends TCP to Chain, as iptables-save prints it.
const jump = "-A OUTPUT -p tcp -j " + Chain

// Family is an address family: IPv4 (iptables) or IPv6 (ip6tables).
type Family int

const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string { return fmt.Sprintf("IPv%d", int(f)) }

// loopback is the family's loopback range, never captured.
func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.0/8"
}

// Rules says which outbound connections are redirected to ToPort.
type Rules struct {
	// Ports are the destination ports captured; empty captures every TCP port.
	Ports []uint16
	// ExcludePorts are destination ports never captured, even when listed in Ports; the
	// sidecar's inbound and health ports belong here.
	ExcludePorts []uint16
	// ToPort is the outbound listener's port.
	ToPort uint16
	// ProxyUID is the sidecar's uid: its own connections (to Restate, to upstreams, passthrough)
	// are never captured, or they would loop back to it.
	ProxyUID uint32
}

// Validate reports rules that cannot be written.
func (r Rules) Validate() error {
	if r.ToPort == 0 {
		return fmt.Errorf("iptables: the outbound listener port (to-port) is 0")
	}
	if slices.Contains(r.Ports, 0) || slices.Contains(r.ExcludePorts, 0) {
		return fmt.Errorf("iptables: port 0 cannot be captured or excluded")
	}
	return nil
}

// Restore returns the iptables-restore --noflush input that (re)writes Chain for one family.
// Declaring the chain flushes it, so its rules are replaced whole. jumps are the OUTPUT rules
// that jump to Chain now (from iptables-save): one of the form written here is kept, the others
// are deleted, and one is added when none is kept, so OUTPUT ends with exactly one jump.
func (r Rules) Restore(f Family, jumps []string) string {
	var b strings.Builder
	b.WriteString("*nat\n:" + Chain + " - [0:0]\n")
	rule := func(s string) { b.WriteString("-A " + Chain + " " + s + "\n") }
	rule(fmt.Sprintf("-m owner --uid-owner %d -j RETURN", r.ProxyUID))
	rule("-o lo -j RETURN")
	rule("-d " + f.loopback() + " -j RETURN")
	for _, p := range sorted(r.ExcludePorts) {
		rule(fmt.Sprintf("-p tcp -m tcp --dport %d -j RETURN", p))
	}
	redirect := fmt.Sprintf("-j REDIRECT --to-ports %d", r.ToPort)
	if len(r.Ports) == 0 {
		rule("-p tcp " + redirect)
	}
	for _, p := range sorted(r.Ports) {
		if !slices.Contains(r.ExcludePorts, p) {
			rule(fmt.Sprintf("-p tcp -m tcp --dport %d %s", p, redirect))
		}
	}
	kept := false
	for _, j := range jumps {
		if j == jump && !kept {
			kept = true
			continue
		}
		b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
	}
	if !kept {
		b.WriteString(jump + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// RemoveRestore returns the iptables-restore --noflush input that deletes every OUTPUT jump to
// Chain and Chain itself, from the nat table as iptables-save -t nat printed it; "" when
// neither is there.
func RemoveRestore(save string) string {
	st := parseSave(save)
	if !st.chain && len(st.jumps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, j := range st.jumps {
		b.WriteString("-D" + strings.TrimPrefix(j, "-A") + "\n")
	}
	if st.chain {
		b.WriteString("-F " + Chain + "\n-X " + Chain + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// state is what iptables-save -t nat shows of our rules.
type state struct {
	chain bool     // Chain exists
	jumps []string // OUTPUT rules that jump to Chain, ours or not
}

func parseSave(save string) state {
	var st state
	for line := range strings.Lines(save) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, ":"+Chain+" "):
			st.chain = true
		case strings.HasPrefix(line, "-A OUTPUT ") && strings.HasSuffix(line, " -j "+Chain):
			st.jumps = append(st.jumps, line)
		}
	}
	return st
}

func sorted(ports []uint16) []uint16 {
	s := slices.Clone(ports)
	slices.Sort(s)
	return slices.Compact(s)
}
