package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"nectar/server/catalog"
	"nectar/server/queue/natstest"
	"nectar/server/tlstest"
)

func TestConfigTLS(t *testing.T) {
	files, err := tlstest.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlstest.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nope.pem")
	tests := []struct {
		cert, key string
		wantErr   string
	}{
		{"", "", ""},
		{files.Cert, files.Key, ""},
		{files.Cert, "", "NECTAR_TLS_CERT and NECTAR_TLS_KEY go together"},
		{"", files.Key, "NECTAR_TLS_CERT and NECTAR_TLS_KEY go together"},
		{missing, files.Key, "NECTAR_TLS_CERT: stat " + missing},
		{files.Cert, missing, "NECTAR_TLS_KEY: stat " + missing},
		{files.Cert, other.Key, "private key does not match public key"},
		{files.Key, files.Cert, "NECTAR_TLS_CERT=" + files.Key},
	}
	key, _ := os.ReadFile(files.Key)
	for _, tt := range tests {
		// The pair is checked by ConfigFromEnv; the files by New (a worker, which reads the
		// same environment but serves no HTTP, never opens them).
		env := map[string]string{"NECTAR_TLS_CERT": tt.cert, "NECTAR_TLS_KEY": tt.key}
		cfg, err := ConfigFromEnv(func(k string) string { return env[k] })
		if err == nil {
			cfg.Target, cfg.PluginDir = t.TempDir(), pluginDir
			var s *Server
			if s, err = New(cfg, catalog.Generated(), slog.New(slog.DiscardHandler)); err == nil {
				s.Close(context.Background())
			}
		}
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("cert %q key %q: %v", tt.cert, tt.key, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("cert %q key %q: %v, want %q", tt.cert, tt.key, err, tt.wantErr)
		case err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(key))[30:60]):
			t.Errorf("the error shows the private key: %v", err)
		}
	}
}

// The API over HTTPS: a client that verifies the certificate against its CA gets runs, status
// and downloads on https:// URLs, and the command-line client does too (SSL_CERT_FILE); a
// client without the CA, and plain HTTP, are refused.
func TestTheAPIServesHTTPS(t *testing.T) {
	files, err := tlstest.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	target := t.TempDir()
	_, logs := startProcess(t, target, []string{"serve"}, "NECTAR_ADDR="+addr, "NECTAR_TLS_CERT="+files.Cert, "NECTAR_TLS_KEY="+files.Key)
	base := "https://" + addr
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: files.ClientConfig(), ForceAttemptHTTP2: true}, Timeout: 30 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := client.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HTTPS answer after 30s (%v):\n%s", err, logs)
		}
	}
	if !strings.Contains(logs.String(), "serving on https://"+addr) {
		t.Errorf("the start line does not say https:\n%s", logs)
	}

	body := postDone(t, client, base+"/api/chains/testchains/hello_chain/HelloTask?name=tls&wait=30s", logs.String)
	for _, u := range []string{body.StatusURL, body.ResourceURL} {
		if !strings.HasPrefix(u, base+"/") {
			t.Errorf("URL %q does not start with %s", u, base)
		}
	}
	resp, err := client.Get(body.ResourceURL)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(out) != "hello tls\n" {
		t.Errorf("GET out over HTTPS = %d %q", resp.StatusCode, out)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("HTTPS answered over %s, want HTTP/2", resp.Proto)
	}

	// Without the CA the certificate is not trusted; plain HTTP gets no API.
	if _, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/healthz"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA = %v, want a certificate error", err)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain HTTP on the HTTPS port = 200")
		}
	}

	// The command-line client trusts the CA named by SSL_CERT_FILE, as every Go program does.
	cli := exec.Command(filepath.Join(pluginDir, "nectar"), "status", body.StatusURL)
	cli.Env = append(os.Environ(), "SSL_CERT_FILE="+files.CA)
	if b, err := cli.CombinedOutput(); err != nil || !strings.Contains(string(b), "DONE") {
		t.Errorf("nectar status over HTTPS: %v\n%s", err, b)
	}
}

// A renewed certificate is served without a restart, and a broken pair keeps the last good one.
func TestTheHTTPSCertificateIsReloaded(t *testing.T) {
	dir := t.TempDir()
	first, err := tlstest.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	var warned []error
	r, err := newCertReloader(first.Cert, first.Key, func(err error) { warned = append(warned, err) })
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		r.mu.Lock()
		r.checked = time.Time{} // as if certCheckEvery had passed
		r.mu.Unlock()
		c, err := r.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return string(c.Certificate[0])
	}
	before := serial()
	if serial() != before {
		t.Fatal("the certificate changed with no change of its files")
	}
	if _, err := tlstest.Write(dir); err != nil { // a renewal: new CA, new pair, same paths
		t.Fatal(err)
	}
	future := time.Now().Add(time.Minute) // mtimes of the same second would not tell
	os.Chtimes(first.Cert, future, future)
	os.Chtimes(first.Key, future, future)
	renewed := serial()
	if renewed == before {
		t.Fatal("the renewed certificate was not taken up")
	}
	os.WriteFile(first.Key, []byte("half a key"), 0o600)
	later := future.Add(time.Minute)
	os.Chtimes(first.Key, later, later)
	if serial() != renewed || len(warned) != 1 || !strings.Contains(warned[0].Error(), "keeping the certificate loaded before") {
		t.Errorf("a broken key: warned %v, want the renewed certificate kept and one warning", warned)
	}
	serial()
	if len(warned) != 1 {
		t.Errorf("the same broken key warned %d times, want once", len(warned))
	}
}

// NATS over TLS: an API server and a worker reach a nats-server that requires TLS, each
// verifying its certificate with NECTAR_NATS_TLS_CA, and a run goes through; without the CA a
// worker refuses to start, saying why.
func TestServerAndWorkerTalkOverNATSWithTLS(t *testing.T) {
	files, err := tlstest.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	nats, err := natstest.Start(1, natstest.WithTLS(files.Cert, files.Key))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	if !strings.HasPrefix(nats.URL(), "tls://") {
		t.Fatalf("URL %s", nats.URL())
	}
	c := &queueCluster{target: t.TempDir(), workers: map[int]*exec.Cmd{}, workerLogs: map[int]*lockedBuffer{},
		env: []string{"NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + nats.URL(), "NECTAR_NATS_TLS_CA=" + files.CA}}
	c.base, c.logs, c.server = c.addServer(t)
	c.addWorker(t)
	ts := &testServer{}
	a := ts.do(t, "POST", c.base+"/api/chains/testchains/hello_chain/HelloTask?name=nats-tls&wait=30s")
	if a.Code != 200 || a.run.JobStatus == nil || *a.run.JobStatus != "DONE" || a.run.Tasks[0].Worker == "" {
		t.Fatalf("run over NATS with TLS = %d %s; tasks:\n%s\nserver:\n%s", a.Code, a.Message, taskTable(a.run.Tasks), c.logs)
	}

	logs := refusedWorker(t, c.target, "NECTAR_DISPATCH=queue", "NECTAR_NATS_URL="+nats.URL())
	if !strings.Contains(logs, "certificate") {
		t.Errorf("a worker without the CA failed without naming the certificate:\n%s", logs)
	}
}

// refusedWorker starts `nectar worker` with env, expects it to exit with an error within a
// minute (it cannot connect), and returns what it printed.
func refusedWorker(t *testing.T, target string, env ...string) string {
	t.Helper()
	cmd, logs := startProcess(t, target, []string{"worker"}, env...)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil {
			t.Errorf("the worker exited 0, want a failure:\n%s", logs)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("the worker still runs after 60s, want a failure:\n%s", logs)
	}
	return logs.String()
}

// doneURLs are the URLs of a POST ?wait answer that ended DONE.
type doneURLs struct {
	StatusURL   string `json:"status_url"`
	ResourceURL string `json:"resource_url"`
}

// postDone POSTs u with client and wants 200 DONE; logs (a server's) are shown otherwise.
func postDone(t *testing.T, client *http.Client, u string, logs func() string) doneURLs {
	t.Helper()
	resp, err := client.Post(u, "", nil)
	if err != nil {
		t.Fatalf("POST %s: %v\n%s", u, err, logs())
	}
	var a struct {
		Data struct {
			JobStatus string `json:"job_status"`
			doneURLs
		} `json:"data"`
	}
	err = json.NewDecoder(resp.Body).Decode(&a)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || a.Data.JobStatus != "DONE" {
		t.Fatalf("POST %s = %d %+v %v\n%s", u, resp.StatusCode, a.Data, err, logs())
	}
	return a.Data.doneURLs
}
