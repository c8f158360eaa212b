package server

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"
)

// loadKeyPair reads the HTTPS certificate and key, with errors that name the variable and the
// file but never show the key's bytes.
func loadKeyPair(certFile, keyFile string) (*tls.Certificate, error) {
	if _, err := os.Stat(certFile); err != nil {
		return nil, fmt.Errorf("NECTAR_TLS_CERT: %w", err)
	}
	if _, err := os.Stat(keyFile); err != nil {
		return nil, fmt.Errorf("NECTAR_TLS_KEY: %w", err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		// tls says which of the two it could not use (no PEM data, a key that does not match).
		return nil, fmt.Errorf("NECTAR_TLS_CERT=%s, NECTAR_TLS_KEY=%s: %w", certFile, keyFile, err)
	}
	return &pair, nil
}

// certReloader serves the certificate files as they are now: a renewed certificate (cert-manager,
// certbot) is taken up without a restart. The files are looked at most every certCheckEvery,
// and a pair that does not load keeps the last good one (and logs why, once per change).
type certReloader struct {
	certFile, keyFile string
	warn              func(error)

	mu        sync.Mutex
	pair      *tls.Certificate
	modified  time.Time // of the files the pair came from (the later of the two)
	checked   time.Time
	lastError string
}

const certCheckEvery = 10 * time.Second

func newCertReloader(certFile, keyFile string, warn func(error)) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, warn: warn, checked: time.Now()}
	r.modified, _ = r.filesModified() // before the load: a renewal in between is seen next time
	pair, err := loadKeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.pair = pair
	return r, nil
}

func (r *certReloader) filesModified() (time.Time, error) {
	var latest time.Time
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if fi.ModTime().After(latest) {
			latest = fi.ModTime()
		}
	}
	return latest, nil
}

// GetCertificate is tls.Config's hook: one stat pair per certCheckEvery, a load on change.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < certCheckEvery {
		return r.pair, nil
	}
	r.checked = time.Now()
	modified, err := r.filesModified()
	if err == nil && modified.Equal(r.modified) {
		return r.pair, nil
	}
	if err == nil {
		var pair *tls.Certificate
		if pair, err = loadKeyPair(r.certFile, r.keyFile); err == nil {
			r.pair, r.modified, r.lastError = pair, modified, ""
			return r.pair, nil
		}
	}
	if err.Error() != r.lastError {
		r.lastError = err.Error()
		r.warn(fmt.Errorf("HTTPS: keeping the certificate loaded before: %w", err))
	}
	return r.pair, nil
}
