package webhookcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// secretFiles are a mounted Secret's files, as cert-manager writes them: a serving pair
// signed by ca, and ca.crt.
func secretFiles(t *testing.T, ca *material) (map[string][]byte, *big.Int) {
	t.Helper()
	leaf, err := newLeaf(ca.ca(), ca.caKey, testHosts, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	m := &material{bundle: ca.bundle, caKey: ca.caKey, leaf: leaf}
	data, err := m.secretData()
	if err != nil {
		t.Fatal(err)
	}
	delete(data, keyCAKey) // cert-manager's Secret holds no CA key
	return data, leaf.Leaf.SerialNumber
}

// selfSignedFiles are the Secret of a cert-manager Certificate from a selfSigned Issuer: the
// serving certificate signs itself, and ca.crt is that certificate.
func selfSignedFiles(t *testing.T) (map[string][]byte, *big.Int) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     testHosts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	k, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return map[string][]byte{keyCert: crt, keyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k}), keyCA: crt}, tmpl.SerialNumber
}

// kubeletVolume writes files into dir as the kubelet's atomic writer does a Secret volume: a
// new timestamped directory, a ..data symlink to it swapped by a rename, and each file a
// symlink through ..data. Readers see the old files or the new, never a mix.
type kubeletVolume struct {
	t   *testing.T
	dir string
	n   int
}

func (v *kubeletVolume) write(files map[string][]byte) {
	v.t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_12_01_00_00_%02d.%d", v.n, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		v.t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), b, 0o644); err != nil {
			v.t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(v.dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(v.dir, "..data_tmp")); err != nil {
		v.t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(v.dir, "..data_tmp"), filepath.Join(v.dir, "..data")); err != nil {
		v.t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			v.t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, old)); err != nil {
			v.t.Fatal(err)
		}
	}
}

// servedSerial makes a TLS handshake over loopback with a server whose certificates come from
// getCert, trusting roots for name, and returns the serial of the certificate it verified.
func servedSerial(t *testing.T, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), roots *x509.CertPool, name string) (*big.Int, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: getCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), &tls.Config{RootCAs: roots, ServerName: name})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestReloaderRotation: the Reloader serves what the kubelet swapped in, and keeps the last
// good pair when what was swapped in does not load.
func TestReloaderRotation(t *testing.T) {
	ca1 := issue(t, time.Now(), time.Now(), testHosts)
	ca2 := issue(t, time.Now(), time.Now(), testHosts)
	roots := x509.NewCertPool()
	roots.AddCert(ca1.ca())
	roots.AddCert(ca2.ca())
	first, firstSerial := secretFiles(t, ca1)
	second, secondSerial := secretFiles(t, ca1)
	third, thirdSerial := secretFiles(t, ca2)
	other, _ := secretFiles(t, ca1)
	mixed := map[string][]byte{keyCert: second[keyCert], keyKey: other[keyKey], keyCA: second[keyCA]}
	wrongCA := map[string][]byte{keyCert: third[keyCert], keyKey: third[keyKey], keyCA: first[keyCA]}
	noCA := map[string][]byte{keyCert: first[keyCert], keyKey: first[keyKey]}
	selfSigned, selfSignedSerial := selfSignedFiles(t)
	roots.AppendCertsFromPEM(selfSigned[keyCA])

	v := &kubeletVolume{t: t, dir: t.TempDir()}
	v.write(first)
	r, err := NewReloader(v.dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.every, r.next = 0, time.Time{} // look at the directory on every handshake
	steps := []struct {
		name  string
		files map[string][]byte // swapped in; nil: none
		want  *big.Int
	}{
		{"as loaded at the start", nil, firstSerial},
		{"renewed", second, secondSerial},
		{"a key of another certificate", mixed, secondSerial},
		{"still broken, unchanged", nil, secondSerial},
		{"a certificate not of the mounted CA", wrongCA, secondSerial},
		{"a new CA with its certificate", third, thirdSerial},
		{"no ca.crt", noCA, firstSerial},
		{"cert-manager's selfSigned issuer: the certificate is its own ca.crt", selfSigned, selfSignedSerial},
	}
	for _, st := range steps {
		if st.files != nil {
			v.write(st.files)
		}
		got, err := servedSerial(t, r.GetCertificate, roots, "inj.sys.svc")
		if err != nil {
			t.Fatalf("%s: handshake: %v", st.name, err)
		}
		if got.Cmp(st.want) != 0 {
			t.Errorf("%s: served serial %x, want %x", st.name, got, st.want)
		}
	}
}

// TestNewReloaderFails: a directory without a pair that loads is an error at the start, when
// there is nothing good to keep serving.
func TestNewReloaderFails(t *testing.T) {
	ca := issue(t, time.Now(), time.Now(), testHosts)
	good, _ := secretFiles(t, ca)
	other, _ := secretFiles(t, issue(t, time.Now(), time.Now(), testHosts))
	tests := []struct {
		name  string
		files map[string][]byte
	}{
		{"empty", map[string][]byte{}},
		{"no key", map[string][]byte{keyCert: good[keyCert], keyCA: good[keyCA]}},
		{"mismatched pair", map[string][]byte{keyCert: good[keyCert], keyKey: other[keyKey]}},
		{"not of its CA", map[string][]byte{keyCert: good[keyCert], keyKey: good[keyKey], keyCA: other[keyCA]}},
	}
	for _, tt := range tests {
		v := &kubeletVolume{t: t, dir: t.TempDir()}
		v.write(tt.files)
		if _, err := NewReloader(v.dir, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("%s: NewReloader succeeded", tt.name)
		}
	}
}

// TestReloaderPlainDirectory: files written in place (no kubelet, e.g. a certificate copied
// in by hand) are read again too.
func TestReloaderPlainDirectory(t *testing.T) {
	ca := issue(t, time.Now(), time.Now(), testHosts)
	roots := x509.NewCertPool()
	roots.AddCert(ca.ca())
	dir := t.TempDir()
	write := func(files map[string][]byte) {
		t.Helper()
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	first, firstSerial := secretFiles(t, ca)
	second, secondSerial := secretFiles(t, ca)
	write(first)
	r, err := NewReloader(dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r.every, r.next = 0, time.Time{}
	for _, st := range []struct {
		name  string
		files map[string][]byte
		want  *big.Int
	}{
		{"as loaded at the start", nil, firstSerial},
		{"rewritten", second, secondSerial},
	} {
		write(st.files)
		got, err := servedSerial(t, r.GetCertificate, roots, "inj.sys.svc")
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got.Cmp(st.want) != 0 {
			t.Errorf("%s: served serial %x, want %x", st.name, got, st.want)
		}
	}
}
