package webhookcert

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"time"
)

// The Secret's keys: those of a kubernetes.io/tls Secret, ca.crt as cert-manager writes it, and
// the signing CA's key, so that any replica can renew the serving certificate.
const (
	keyCert  = "tls.crt"
	keyKey   = "tls.key"
	keyCA    = "ca.crt"
	keyCAKey = "ca.key"
)

// caSubject names the CAs; each also carries the time it was made.
const caSubject = "restate-grpc-injector-ca"

// material is what the Secret holds, parsed: the trust bundle (ca.crt: the signing CA first,
// then retired CAs kept until they expire, because replicas may still serve certificates they
// signed), the signing CA's key, and the serving certificate with its key.
type material struct {
	bundle []*x509.Certificate
	caKey  crypto.Signer
	leaf   tls.Certificate // Leaf is set
}

// ca is the signing CA: the first certificate of the bundle.
func (m *material) ca() *x509.Certificate { return m.bundle[0] }

// bundlePEM is ca.crt, and what every webhook's caBundle holds.
func (m *material) bundlePEM() []byte {
	var b bytes.Buffer
	for _, c := range m.bundle {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

func (m *material) secretData() (map[string][]byte, error) {
	caKey, err := x509.MarshalPKCS8PrivateKey(m.caKey)
	if err != nil {
		return nil, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(m.leaf.PrivateKey)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		keyCert:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.leaf.Leaf.Raw}),
		keyKey:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
		keyCA:    m.bundlePEM(),
		keyCAKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKey}),
	}, nil
}

// parseMaterial reads a Secret's data; any part missing or inconsistent is an error, and the
// caller replaces the whole.
func parseMaterial(data map[string][]byte) (*material, error) {
	for _, k := range []string{keyCert, keyKey, keyCA, keyCAKey} {
		if len(data[k]) == 0 {
			return nil, fmt.Errorf("no %s", k)
		}
	}
	leaf, err := tls.X509KeyPair(data[keyCert], data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("%s/%s: %w", keyCert, keyKey, err)
	}
	bundle, err := parseCerts(data[keyCA])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyCA, err)
	}
	block, _ := pem.Decode(data[keyCAKey])
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM block", keyCAKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyCAKey, err)
	}
	caKey, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: a %T cannot sign", keyCAKey, k)
	}
	if pub, ok := caKey.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(bundle[0].PublicKey) {
		return nil, fmt.Errorf("%s is not the key of the first certificate of %s", keyCAKey, keyCA)
	}
	if !bundle[0].IsCA {
		return nil, fmt.Errorf("the first certificate of %s is not a CA", keyCA)
	}
	return &material{bundle: bundle, caKey: caKey, leaf: leaf}, nil
}

func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	return certs, nil
}

// skew backdates a certificate's NotBefore, so that an API server whose clock is a little
// behind ours accepts it at once; a tenth of short lifetimes (tests), at most five minutes.
func skew(lifetime time.Duration) time.Duration { return min(5*time.Minute, lifetime/10) }

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// newCA makes a self-signed ECDSA P-256 CA valid for lifetime from now. Its name carries the
// time, as kube's own self-signed CAs do, so that an operator can tell the CAs of a bundle apart.
func newCA(now time.Time, lifetime time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: caSubject + "@" + strconv.FormatInt(now.Unix(), 10)},
		NotBefore:             now.Add(-skew(lifetime)),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, key, err
}

// newLeaf makes a serving certificate for hosts (DNS names or IP addresses) signed by ca,
// valid for lifetime but never past the CA: so a retired CA is needed no longer than it is valid.
func newLeaf(ca *x509.Certificate, caKey crypto.Signer, hosts []string, now time.Time, lifetime time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	sn, err := serial()
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		// No common name: it is not checked when there are SANs, and svc.ns.svc may be longer
		// than the 64 characters a common name may have.
		SerialNumber: sn,
		NotBefore:    now.Add(-skew(lifetime)),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.NotAfter) {
		tmpl.NotAfter = ca.NotAfter
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// renewDue says whether less than a third of c's lifetime remains.
func renewDue(c *x509.Certificate, now time.Time) bool {
	return c.NotAfter.Sub(now) < c.NotAfter.Sub(c.NotBefore)/3
}

// verifyLeaf checks leaf as the API server will: against the bundle, for each of hosts, now.
func verifyLeaf(leaf *x509.Certificate, bundle []*x509.Certificate, hosts []string, now time.Time) error {
	roots := x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	for _, h := range hosts {
		opts := x509.VerifyOptions{Roots: roots, DNSName: h, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
		if _, err := leaf.Verify(opts); err != nil {
			return err
		}
	}
	return nil
}

// fingerprint names a certificate in logs and in the Manager's bookkeeping.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf("%x", sum[:8])
}
