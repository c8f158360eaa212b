package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestPprofConfig(t *testing.T) {
	for _, tt := range []struct{ value, err string }{
		{"127.0.0.1:6060", ""},
		{"localhost:0", ""},
		{"[::1]:6060", ""},
		{"0.0.0.0:6060", `NECTAR_PPROF="0.0.0.0:6060": want a loopback host:port`},
		{"10.0.0.5:6060", `NECTAR_PPROF="10.0.0.5:6060": want a loopback host:port`},
		{"6060", `NECTAR_PPROF="6060": want a loopback host:port`},
	} {
		_, err := ConfigFromEnv(func(k string) string {
			if k == "NECTAR_PPROF" {
				return tt.value
			}
			return ""
		})
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("NECTAR_PPROF=%s: %v", tt.value, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("NECTAR_PPROF=%s: error %v, want %q", tt.value, err, tt.err)
		}
	}
}

// NECTAR_PPROF serves the profiles on their own loopback port, not on the API's.
func TestPprofServesProfiles(t *testing.T) {
	addr := freeAddr(t)
	base, _ := startBinary(t, t.TempDir(), "NECTAR_PPROF="+addr)
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("pprof: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("GET /debug/pprof/goroutine = %d %.100s", resp.StatusCode, body)
	}
	if resp, err := http.Get(base + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("the API port serves pprof too")
		}
	}
}
