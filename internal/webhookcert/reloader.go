package webhookcert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// ReloadRecheck is how often at most a Reloader looks at its directory again. The kubelet
// updates a mounted Secret about a minute after it changed, so looking more often buys nothing.
const ReloadRecheck = 10 * time.Second

// Reloader is the cert-manager way: it serves tls.crt and tls.key of a directory (a mounted
// Secret of a cert-manager Certificate) and reads them again when they change. When ca.crt is
// there too, a pair must verify against it. A pair that does not load is logged and the last
// good one goes on being served.
type Reloader struct {
	dir   string
	every time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	tried   [3]os.FileInfo // of the last files read, good or not: a bad pair is read once
	next    time.Time      // the next look at the directory
	lastErr string
}

var reloadFiles = [3]string{keyCert, keyKey, keyCA}

// NewReloader reads the pair from dir; it fails if there is none or it does not load. logger
// gets a line for each pair loaded (Info) and each that failed (Warn); nil is slog.Default().
func NewReloader(dir string, logger *slog.Logger) (*Reloader, error) {
	if logger == nil {
		logger = slog.Default()
	}
	r := &Reloader{dir: dir, every: ReloadRecheck, log: logger.With("dir", dir)}
	files, err := r.stamp()
	if err != nil {
		return nil, err
	}
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cert, r.tried, r.next = cert, files, time.Now().Add(r.every)
	r.logLoaded()
	return r, nil
}

// GetCertificate is for tls.Config: the newest pair of the directory that loaded.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if now.Before(r.next) {
		return r.cert, nil
	}
	r.next = now.Add(r.every)
	files, err := r.stamp()
	if err == nil && sameFiles(files, r.tried) {
		return r.cert, nil
	}
	var cert *tls.Certificate
	if err == nil {
		r.tried = files
		cert, err = r.load()
	}
	if err != nil {
		if msg := err.Error(); msg != r.lastErr {
			r.lastErr = msg
			r.log.Warn("reloading the webhook certificate failed; serving the last one loaded", "error", err)
		}
		return r.cert, nil
	}
	r.lastErr = ""
	r.cert = cert
	r.logLoaded()
	return r.cert, nil
}

func (r *Reloader) logLoaded() {
	leaf := r.cert.Leaf
	r.log.Info("serving the webhook certificate", "serial", leaf.SerialNumber.Text(16),
		"issuer", leaf.Issuer.CommonName, "notAfter", leaf.NotAfter.Format(time.RFC3339))
}

// stamp returns what identifies the files' contents: the kubelet swaps a Secret volume's
// ..data symlink, so each file resolves to a new inode; a file rewritten in place changes its
// size or time. ca.crt may be missing (its FileInfo is nil).
func (r *Reloader) stamp() ([3]os.FileInfo, error) {
	var files [3]os.FileInfo
	for i, name := range reloadFiles {
		info, err := os.Stat(filepath.Join(r.dir, name))
		if name == keyCA && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return files, err
		}
		files[i] = info
	}
	return files, nil
}

func sameFiles(a, b [3]os.FileInfo) bool {
	for i := range a {
		switch {
		case a[i] == nil || b[i] == nil:
			if a[i] != b[i] {
				return false
			}
		case !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()):
			return false
		}
	}
	return true
}

// load reads the pair and, if there is one, the CA it must verify against. In a Secret
// volume it reads them from the directory ..data leads to, resolved once, so that a swap
// between two reads cannot mix the files of two versions.
func (r *Reloader) load() (*tls.Certificate, error) {
	dir := r.dir
	if d, err := filepath.EvalSymlinks(filepath.Join(r.dir, "..data")); err == nil {
		dir = d
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, keyCert))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyKey))
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s/%s in %s: %w", keyCert, keyKey, r.dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, keyCA))
	if errors.Is(err, fs.ErrNotExist) {
		return &cert, nil
	}
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%s in %s: no certificate", keyCA, r.dir)
	}
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s in %s: %w", keyCert, r.dir, err)
		}
		inter.AddCert(c)
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("%s in %s does not verify against its %s: %w", keyCert, r.dir, keyCA, err)
	}
	return &cert, nil
}
