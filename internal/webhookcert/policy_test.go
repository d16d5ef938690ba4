package webhookcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"slices"
	"strings"
	"testing"
	"time"
)

var testHosts = []string{"inj.sys.svc", "inj", "inj.sys", "inj.sys.svc.cluster.local"}

const (
	testCALife   = 90 * time.Hour
	testCertLife = 9 * time.Hour
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// issue makes material as the policy would have at the given times: a CA made at caAt, a
// serving certificate it signed at leafAt for hosts, and retired CAs after it.
func issue(t *testing.T, caAt, leafAt time.Time, hosts []string, retired ...*x509.Certificate) *material {
	t.Helper()
	ca, caKey, err := newCA(caAt, testCALife)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := newLeaf(ca, caKey, hosts, leafAt, testCertLife)
	if err != nil {
		t.Fatal(err)
	}
	return &material{bundle: append([]*x509.Certificate{ca}, retired...), caKey: caKey, leaf: leaf}
}

// TestPolicy: what the Secret holds next, from what it holds, the time, and which CAs the API
// server has had long enough.
func TestPolicy(t *testing.T) {
	retired := issue(t, t0.Add(-80*time.Hour), t0.Add(-80*time.Hour), testHosts).ca()
	expired := issue(t, t0.Add(-200*time.Hour), t0.Add(-200*time.Hour), testHosts).ca()
	// movedCA: a CA renewed at t0 whose predecessor signed the serving certificate.
	old := issue(t, t0.Add(-61*time.Hour), t0, testHosts)
	moved := issue(t, t0, t0, testHosts, old.ca())
	moved.leaf = old.leaf
	type want struct {
		change    bool
		newCA     bool // a new CA heads the bundle
		newLeaf   bool
		bundle    int    // CAs in the bundle
		why       string // in the reasons
		leafIssue string // the common name of the serving certificate's issuer, when not the CA's
	}
	tests := []struct {
		name    string
		cur     *material
		now     time.Time
		settled bool // whether the policy is told every CA has settled
		want    want
	}{
		{"no Secret", nil, t0, false, want{change: true, newCA: true, newLeaf: true, bundle: 1, why: "created"}},
		{"fresh", issue(t, t0, t0, testHosts), t0.Add(time.Hour), true, want{bundle: 1}},
		{"serving certificate due", issue(t, t0, t0, testHosts), t0.Add(7 * time.Hour), true,
			want{change: true, newLeaf: true, bundle: 1, why: "serving certificate expires"}},
		{"serving certificate due, CA not settled: wait", issue(t, t0, t0, testHosts), t0.Add(7 * time.Hour), false, want{bundle: 1}},
		{"serving certificate expired, CA not settled: at once", issue(t, t0, t0, testHosts), t0.Add(10 * time.Hour), false,
			want{change: true, newLeaf: true, bundle: 1, why: "does not verify"}},
		{"service renamed: at once", issue(t, t0, t0, []string{"old.sys.svc"}), t0.Add(time.Hour), false,
			want{change: true, newLeaf: true, bundle: 1, why: "does not verify"}},
		{"CA due: new CA, serving certificate stays until it settles", issue(t, t0.Add(-61*time.Hour), t0, testHosts), t0.Add(time.Hour), false,
			want{change: true, newCA: true, bundle: 2, why: "new CA", leafIssue: old.ca().Subject.CommonName}},
		{"new CA settled: serving certificate moves", moved, t0.Add(time.Hour), true,
			want{change: true, newLeaf: true, bundle: 2, why: "moves to the new CA"}},
		{"new CA not settled: serving certificate stays", moved, t0.Add(time.Hour), false, want{bundle: 2}},
		{"retired CA kept while valid", issue(t, t0, t0, testHosts, retired), t0.Add(time.Hour), true, want{bundle: 2}},
		{"all expired (the replicas were down): new CA and serving certificate at once, the old CA dropped",
			issue(t, t0.Add(-100*time.Hour), t0.Add(-20*time.Hour), testHosts), t0, false,
			want{change: true, newCA: true, newLeaf: true, bundle: 1, why: "dropped expired CA"}},
		{"expired retired CA dropped", issue(t, t0, t0, testHosts, expired, retired), t0.Add(time.Hour), true,
			want{change: true, bundle: 2, why: "dropped expired CA"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy{hosts: testHosts, caLifetime: testCALife, certLifetime: testCertLife,
				settled: func(*x509.Certificate, time.Time) bool { return tt.settled }}
			next, why, err := p.next(tt.cur, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if got := next != nil; got != tt.want.change {
				t.Fatalf("changed = %v (%q), want %v", got, why, tt.want.change)
			}
			if next == nil {
				return
			}
			got := want{change: true, bundle: len(next.bundle)}
			got.newCA = tt.cur == nil || !next.ca().Equal(tt.cur.ca())
			got.newLeaf = tt.cur == nil || !next.leaf.Leaf.Equal(tt.cur.leaf.Leaf)
			if iss := next.leaf.Leaf.Issuer.CommonName; iss != next.ca().Subject.CommonName {
				got.leafIssue = iss
			}
			if r := strings.Join(why, "; "); strings.Contains(r, tt.want.why) {
				got.why = tt.want.why
			} else {
				got.why = r
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			// Whatever the Secret holds next verifies, and survives the trip through the Secret.
			if err := verifyLeaf(next.leaf.Leaf, next.bundle, testHosts, tt.now); err != nil {
				t.Errorf("the serving certificate does not verify against the bundle: %v", err)
			}
			data, err := next.secretData()
			if err != nil {
				t.Fatal(err)
			}
			back, err := parseMaterial(data)
			if err != nil {
				t.Fatalf("parseMaterial(secretData()): %v", err)
			}
			if !back.leaf.Leaf.Equal(next.leaf.Leaf) || !slices.EqualFunc(back.bundle, next.bundle, (*x509.Certificate).Equal) {
				t.Error("the Secret's data reads back as other certificates")
			}
		})
	}
}

// TestNewCertificates: what the bootstrap creates, field by field.
func TestNewCertificates(t *testing.T) {
	p := policy{hosts: append(slices.Clone(testHosts), "127.0.0.1"), caLifetime: testCALife, certLifetime: testCertLife}
	m, _, err := p.next(nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	ca, leaf := m.ca(), m.leaf.Leaf
	tests := []struct {
		name      string
		got, want any
	}{
		{"CA is a CA", ca.IsCA && ca.BasicConstraintsValid && ca.MaxPathLenZero, true},
		{"CA key", ca.PublicKey.(*ecdsa.PublicKey).Curve, elliptic.P256()},
		{"CA key usage", ca.KeyUsage, x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature},
		{"CA lifetime", ca.NotAfter.Sub(t0), testCALife},
		{"CA self-signed", ca.CheckSignatureFrom(ca), nil},
		{"leaf key", leaf.PublicKey.(*ecdsa.PublicKey).Curve, elliptic.P256()},
		{"leaf signed by the CA", leaf.CheckSignatureFrom(ca), nil},
		{"leaf is no CA", leaf.IsCA, false},
		{"leaf names", leaf.DNSNames, testHosts},
		{"leaf IPs", len(leaf.IPAddresses) == 1 && leaf.IPAddresses[0].String() == "127.0.0.1", true},
		{"leaf usage", leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"leaf lifetime", leaf.NotAfter.Sub(t0), testCertLife},
		{"leaf backdated for clock skew", t0.Sub(leaf.NotBefore), 5 * time.Minute},
	}
	for _, tt := range tests {
		if !equal(tt.got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	// Names as long as Kubernetes allows (63 characters each of service and namespace) fit.
	long := strings.Repeat("s", 63) + "." + strings.Repeat("n", 63) + ".svc"
	longLeaf, err := newLeaf(ca, m.caKey, []string{long}, t0, testCertLife)
	if err != nil {
		t.Fatalf("a serving certificate for %s: %v", long, err)
	}
	if err := verifyLeaf(longLeaf.Leaf, m.bundle, []string{long}, t0); err != nil {
		t.Errorf("a serving certificate for %s: %v", long, err)
	}
	// A serving certificate never outlives its CA.
	short, err := newLeaf(ca, m.caKey, testHosts, ca.NotAfter.Add(-time.Hour), testCertLife)
	if err != nil {
		t.Fatal(err)
	}
	if !short.Leaf.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("a serving certificate issued an hour before its CA expires ends at %v, want %v", short.Leaf.NotAfter, ca.NotAfter)
	}
}

func equal(a, b any) bool {
	switch a := a.(type) {
	case []string:
		return slices.Equal(a, b.([]string))
	case []x509.ExtKeyUsage:
		return slices.Equal(a, b.([]x509.ExtKeyUsage))
	}
	return a == b
}

// TestParseMaterial: a Secret that is not whole, or whose parts do not belong together, is
// refused (and replaced by the Manager), saying what is wrong.
func TestParseMaterial(t *testing.T) {
	a := issue(t, t0, t0, testHosts)
	b := issue(t, t0, t0, testHosts)
	da, err := a.secretData()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.secretData()
	if err != nil {
		t.Fatal(err)
	}
	with := func(k string, v []byte) map[string][]byte {
		d := map[string][]byte{}
		for k, v := range da {
			d[k] = v
		}
		d[k] = v
		return d
	}
	tests := []struct {
		name string
		data map[string][]byte
		want string // in the error; "" for none
	}{
		{"whole", da, ""},
		{"empty", nil, "no tls.crt"},
		{"no CA key", with(keyCAKey, nil), "no ca.key"},
		{"serving key of another", with(keyKey, db[keyKey]), "tls.crt/tls.key"},
		{"CA key of another", with(keyCAKey, db[keyCAKey]), "ca.key is not the key of the first certificate"},
		{"CA bundle garbage", with(keyCA, []byte("garbage")), "ca.crt: no certificate"},
		{"CA bundle led by a serving certificate", with(keyCA, da[keyCert]), "ca.key is not the key"},
	}
	for _, tt := range tests {
		_, err := parseMaterial(tt.data)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
			t.Errorf("%s: error %q, want one containing %q", tt.name, got, tt.want)
		}
	}
}
