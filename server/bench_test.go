package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
)

// Go micro-benchmarks of the server in-process (real plugin processes, local store). The
// end-to-end table with the real binary and a load driver is tools/bench; both run in make bench.

// BenchmarkSingleRun runs with the run history on (the default) and off: the index must not
// cost a run more than a millisecond.
func BenchmarkSingleRun(b *testing.B) {
	for _, db := range []string{"on", "off"} {
		b.Run("history="+db, func(b *testing.B) {
			ts := newTestServer(&testing.T{}, func(c *Config) {
				if db == "off" {
					c.DatabaseURL = "off"
				}
			})
			defer ts.Close(b.Context())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				postOK(b, ts, fmt.Sprintf("/api/chains/testchains/hello_chain/HelloTask?name=b%d&wait=30s", i))
			}
		})
	}
}

func BenchmarkFanIn100(b *testing.B) {
	for _, par := range []int{2, 4, 8, 16} {
		b.Run(fmt.Sprintf("parallelism=%d", par), func(b *testing.B) {
			ts := newTestServer(&testing.T{}, func(c *Config) { c.TaskParallelism = par })
			defer ts.Close(b.Context())
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				os.RemoveAll(filepath.Join(ts.target, "chains"))
				b.StartTimer()
				postOK(b, ts, "/api/chains/testchains/fanin_chain/JoinTask?leaves=100&wait=60s")
			}
		})
	}
}

func BenchmarkCacheHit(b *testing.B) {
	ts := newTestServer(&testing.T{})
	defer ts.Close(b.Context())
	postOK(b, ts, "/api/chains/testchains/hello_chain/HelloTask?name=hit&wait=30s")
	serveParallel(b, ts, http.MethodPost, "/api/chains/testchains/hello_chain/HelloTask?name=hit")
}

// serveParallel calls the server's handler in-process from GOMAXPROCS goroutines, each call
// wanting a 200.
func serveParallel(b *testing.B, ts *testServer, method, target string) {
	h := ts.Handler()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
			if rec.Code != http.StatusOK {
				b.Fatalf("%s %s = %d", method, target, rec.Code)
			}
		}
	})
}

// BenchmarkStatusGet reads the status URL of a finished run, as clients polling it do.
func BenchmarkStatusGet(b *testing.B) {
	ts := newTestServer(&testing.T{})
	defer ts.Close(b.Context())
	a := ts.post(&testing.T{}, "/api/chains/testchains/hello_chain/HelloTask?name=status&wait=30s")
	u, err := url.Parse(a.run.StatusURL)
	if err != nil || a.run.StatusURL == "" {
		b.Fatalf("no status URL: %v", err)
	}
	serveParallel(b, ts, http.MethodGet, u.RequestURI())
}

func postOK(b *testing.B, ts *testServer, path string) {
	resp, err := http.Post(ts.url+path, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("POST %s = %d", path, resp.StatusCode)
	}
}
