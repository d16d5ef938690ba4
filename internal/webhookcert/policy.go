package webhookcert

import (
	"crypto/x509"
	"fmt"
	"time"
)

// policy decides what the Secret should hold next. It is the Manager's logic without the API
// server, so that it can be tested on its own.
type policy struct {
	hosts        []string // of the serving certificate
	caLifetime   time.Duration
	certLifetime time.Duration
	// settled says whether the API server has had ca in its bundle long enough that a serving
	// certificate signed by it will be trusted.
	settled func(ca *x509.Certificate, now time.Time) bool
}

// next returns what the Secret should hold instead of cur (nil: the Secret is missing or
// unusable), and why; or nil when cur stays as it is.
func (p policy) next(cur *material, now time.Time) (*material, []string, error) {
	if cur == nil {
		ca, caKey, err := newCA(now, p.caLifetime)
		if err != nil {
			return nil, nil, err
		}
		leaf, err := newLeaf(ca, caKey, p.hosts, now, p.certLifetime)
		if err != nil {
			return nil, nil, err
		}
		return &material{bundle: []*x509.Certificate{ca}, caKey: caKey, leaf: leaf}, []string{"created a CA and a serving certificate"}, nil
	}
	nm := &material{bundle: cur.bundle, caKey: cur.caKey, leaf: cur.leaf}
	var why []string
	if renewDue(cur.ca(), now) {
		ca, caKey, err := newCA(now, p.caLifetime)
		if err != nil {
			return nil, nil, err
		}
		nm.bundle = append([]*x509.Certificate{ca}, nm.bundle...)
		nm.caKey = caKey
		why = append(why, fmt.Sprintf("new CA %s (CA %s expires at %s)",
			ca.Subject.CommonName, cur.ca().Subject.CommonName, cur.ca().NotAfter.Format(time.RFC3339)))
	}
	// A retired CA goes once it has expired: no serving certificate outlives its CA, so none
	// that a replica may still serve chains to it any more.
	kept := nm.bundle[:1:1]
	for _, c := range nm.bundle[1:] {
		if now.Before(c.NotAfter) {
			kept = append(kept, c)
		} else {
			why = append(why, "dropped expired CA "+c.Subject.CommonName)
		}
	}
	nm.bundle = kept
	leaf := cur.leaf.Leaf
	var reissue string
	switch err := verifyLeaf(leaf, nm.bundle, p.hosts, now); {
	case err != nil:
		// Nothing a replica serves from this Secret works: there is nothing to wait for.
		reissue = "the serving certificate does not verify: " + err.Error()
	case leaf.CheckSignatureFrom(nm.ca()) != nil && p.settled(nm.ca(), now):
		reissue = "the serving certificate moves to the new CA"
	case renewDue(leaf, now) && p.settled(nm.ca(), now):
		reissue = "the serving certificate expires at " + leaf.NotAfter.Format(time.RFC3339)
	}
	if reissue != "" {
		l, err := newLeaf(nm.ca(), nm.caKey, p.hosts, now, p.certLifetime)
		if err != nil {
			return nil, nil, err
		}
		nm.leaf = l
		why = append(why, reissue)
	}
	if len(why) == 0 {
		return nil, nil, nil
	}
	return nm, why, nil
}
