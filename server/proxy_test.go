package server

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"nectar/server/tlstest"
)

// nginxBin is Debian's nginx (make tools installs nginx-light).
const nginxBin = "/usr/sbin/nginx"

// README's reverse proxy, run as written (tools/deploy/nginx/nectar.conf, with this test's
// ports, certificate and users): the web UI asks for a password over TLS, the API and its
// signed URLs pass without one, and the URLs the server signs point at the proxy.
func TestTheReverseProxyRecipe(t *testing.T) {
	if _, err := os.Stat(nginxBin); err != nil {
		t.Fatalf("this test needs Debian's nginx (make tools installs it): %v", err)
	}
	dir := t.TempDir()
	files, err := tlstest.Write(dir)
	if err != nil {
		t.Fatal(err)
	}
	proxyAddr := freeAddr(t)
	proxy := "https://" + proxyAddr
	ts := newTestServer(t, func(c *Config) { c.PublicURL = proxy })
	upstream := strings.TrimPrefix(ts.url, "http://")

	recipe, err := os.ReadFile("../tools/deploy/nginx/nectar.conf")
	if err != nil {
		t.Fatal(err)
	}
	conf := string(recipe)
	for old, new := range map[string]string{
		"listen 443 ssl http2;":                        "listen " + proxyAddr + " ssl http2;",
		"server 127.0.0.1:5000;":                       "server " + upstream + ";",
		"/etc/ssl/nectar/fullchain.pem":                files.Cert,
		"/etc/ssl/nectar/privkey.pem":                  files.Key,
		"/etc/nginx/nectar.htpasswd":                   filepath.Join(dir, "htpasswd"),
		"NECTAR_PUBLIC_URL=https://nectar.example.com": "",
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("tools/deploy/nginx/nectar.conf no longer has %q: update this test and README together", old)
		}
		conf = strings.ReplaceAll(conf, old, new)
	}
	// A salted SHA-1 ({SSHA}, RFC 2307): nginx checks it without crypt(3) schemes of the OS.
	salt := make([]byte, 8)
	rand.Read(salt)
	sum := sha1.Sum(append([]byte("s3cret"), salt...))
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte("ada:{SSHA}"+base64.StdEncoding.EncodeToString(append(sum[:], salt...))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "nectar.conf"), []byte(conf), 0o600)
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/nectar.conf;
}
`, dir)
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o600)
	cmd := exec.Command(nginxBin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	errLog := func() string { b, _ := os.ReadFile(filepath.Join(dir, "error.log")); return out.String() + string(b) }

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: files.ClientConfig(), ForceAttemptHTTP2: true},
		Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path, user, password string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, proxy+path, nil)
		if user != "" {
			req.SetBasicAuth(user, password)
		}
		req.Header.Set("Accept", "text/html")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s through nginx: %v\n%s", path, err, errLog())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := client.Get(proxy + "/healthz"); err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not answer within 20s:\n%s", errLog())
		}
	}

	if resp, _ := get("/", "", ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `Basic realm="Nectar"`) {
		t.Errorf("the UI without a password = %d %v, want 401 with a Basic challenge", resp.StatusCode, resp.Header)
	}
	if resp, _ := get("/", "ada", "wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the UI with a wrong password = %d, want 401", resp.StatusCode)
	}
	resp, body := get("/catalog", "ada", "s3cret")
	if resp.StatusCode != 200 || !strings.Contains(body, "HelloTask") || resp.ProtoMajor != 2 {
		t.Errorf("the UI with the password = %d %s, want the catalog over HTTP/2", resp.StatusCode, resp.Proto)
	}

	// The API: no password; its signed URLs name the proxy and work through it.
	a := postDone(t, client, proxy+"/api/chains/testchains/hello_chain/HelloTask?name=proxy&wait=30s", errLog)
	if !strings.HasPrefix(a.ResourceURL, proxy+"/api/download/") {
		t.Fatalf("the out URL %s does not name the proxy", a.ResourceURL)
	}
	u, _ := url.Parse(a.ResourceURL)
	if resp, body := get(u.RequestURI(), "", ""); resp.StatusCode != 200 || body != "hello proxy\n" {
		t.Errorf("the signed out URL through nginx = %d %q", resp.StatusCode, body)
	}
	if resp, _ := get("/metrics", "", ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("/metrics through nginx = %d, want 403", resp.StatusCode)
	}
}
