package iptables

import (
	"errors"
	"strings"
	"testing"
)

func TestRestoreJumps(t *testing.T) {
	r := Rules{Ports: []uint16{50051}, ToPort: 15001, ProxyUID: 1337}
	other := "-A OUTPUT -d 10.0.0.0/8 -j " + Chain
	tests := []struct {
		name  string
		jumps []string
		want  []string // the OUTPUT lines of the input
	}{
		{"none yet", nil, []string{jump}},
		{"ours already", []string{jump}, nil},
		{"ours twice", []string{jump, jump}, []string{"-D OUTPUT -p tcp -j " + Chain}},
		{"another shape", []string{other}, []string{"-D OUTPUT -d 10.0.0.0/8 -j " + Chain, jump}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for line := range strings.Lines(r.Restore(IPv4, tt.jumps)) {
				if strings.Contains(line, " OUTPUT ") {
					got = append(got, strings.TrimSpace(line))
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Restore(IPv4, %q) OUTPUT lines = %q, want %q", tt.jumps, got, tt.want)
			}
		})
	}
}

func TestRemoveRestore(t *testing.T) {
	const saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
	tests := []struct {
		name, save, want string
	}{
		{"absent", saved + "COMMIT\n", ""},
		{"present", saved + ":RESTATE_GRPC_OUTPUT - [0:0]\n-A OUTPUT -p tcp -j RESTATE_GRPC_OUTPUT\n-A RESTATE_GRPC_OUTPUT -o lo -j RETURN\nCOMMIT\n",
			"*nat\n-D OUTPUT -p tcp -j RESTATE_GRPC_OUTPUT\n-F RESTATE_GRPC_OUTPUT\n-X RESTATE_GRPC_OUTPUT\nCOMMIT\n"},
		{"chain only", saved + ":RESTATE_GRPC_OUTPUT - [0:0]\nCOMMIT\n", "*nat\n-F RESTATE_GRPC_OUTPUT\n-X RESTATE_GRPC_OUTPUT\nCOMMIT\n"},
		{"another's rules kept", saved + "-A OUTPUT -p tcp -j OTHER\nCOMMIT\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RemoveRestore(tt.save); got != tt.want {
				t.Errorf("RemoveRestore(%q) = %q, want %q", tt.save, got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		r    Rules
		ok   bool
	}{
		{"all TCP", Rules{ToPort: 15001}, true},
		{"no to-port", Rules{}, false},
		{"port 0", Rules{ToPort: 15001, Ports: []uint16{0}}, false},
		{"excluded port 0", Rules{ToPort: 15001, ExcludePorts: []uint16{0}}, false},
	}
	for _, tt := range tests {
		if err := tt.r.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestParseBackend(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Backend
		ok   bool
	}{{"auto", Auto, true}, {"nft", NFT, true}, {"legacy", Legacy, true}, {"nftables", "", false}, {"", "", false}} {
		if got, err := ParseBackend(tt.in); got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseBackend(%q) = %q, %v; want %q, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestCapEff(t *testing.T) {
	tests := []struct {
		name, status string
		want         uint64
		ok           bool
	}{
		{"root", "Name:\tsidecar\nCapEff:\t000001ffffffffff\n", 0x1ffffffffff, true},
		{"none", "CapEff:\t0000000000000000\n", 0, true},
		{"NET_ADMIN and NET_RAW", "CapEff:\t0000000000003000\n", 1<<capNetAdmin | 1<<capNetRaw, true},
		{"missing", "Name:\tsidecar\n", 0, false},
		{"garbled", "CapEff:\tzz\n", 0, false},
	}
	for _, tt := range tests {
		if got, err := capEff(tt.status); got != tt.want || (err == nil) != tt.ok {
			t.Errorf("%s: capEff() = %#x, %v; want %#x, ok %v", tt.name, got, err, tt.want, tt.ok)
		}
	}
}

func TestLookPathMissing(t *testing.T) {
	_, err := lookPath("iptables-nosuch-restore")
	if err == nil || !strings.Contains(err.Error(), "apt-get install -y iptables") {
		t.Errorf("lookPath(missing) = %v, want an error saying how to install iptables", err)
	}
	if errors.Is(err, ErrPrivilege) {
		t.Errorf("lookPath(missing) = %v, want no privilege error", err)
	}
}
