package server

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"nectar/server/queue/natstest"
)

// A NATS password given in NECTAR_NATS_URL reaches neither a log line (at debug level) nor
// what the cluster shows of its processes: the workers list, /metrics. A wrong one is refused
// with an error that names the URL without it.
func TestNATSPasswordsStayOutOfLogsAndEntries(t *testing.T) {
	const password = "pw-Zq8sXk2v"
	nats, err := natstest.Start(1, natstest.WithUser("nectar", password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	url := strings.Replace(nats.URL(), "nats://", "nats://nectar:"+password+"@", 1)
	c := &queueCluster{target: t.TempDir(), workers: map[int]*exec.Cmd{}, workerLogs: map[int]*lockedBuffer{},
		env: []string{"NECTAR_DISPATCH=queue", "NECTAR_NATS_URL=" + url, "NECTAR_LOG_LEVEL=debug"}}
	c.base, c.logs, c.server = c.addServer(t)
	worker := c.addWorker(t)
	ts := &testServer{}
	if a := ts.do(t, "POST", c.base+"/api/chains/testchains/hello_chain/HelloTask?name=auth&wait=30s"); a.Code != 200 {
		t.Fatalf("run with a NATS password = %d %s\n%s", a.Code, a.Message, c.logs)
	}
	var seen []string
	for _, path := range []string{"/api/workers", "/metrics"} {
		resp, err := http.Get(c.base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen = append(seen, path+": "+string(b))
	}
	seen = append(seen, "server log: "+c.logs.String(), "worker log: "+c.workerLogs[worker.Process.Pid].String())

	wrong := strings.Replace(url, password, "not-"+password, 1)
	logs := refusedWorker(t, c.target, "NECTAR_DISPATCH=queue", "NECTAR_NATS_URL="+wrong)
	if !strings.Contains(logs, "nats://***@127.0.0.1") {
		t.Errorf("a worker with a wrong password failed without naming the URL (without it):\n%s", logs)
	}
	seen = append(seen, "refused worker: "+logs)
	for _, s := range seen {
		if strings.Contains(s, password) {
			t.Errorf("the password shows in %.2000s", s)
		}
	}
}

// With its external NATS down, a server says so at once: a POST that would start a run (it
// would wait for the queue, unanswered) and the workers list answer 503 with Retry-After,
// naming the task queue; a status read still answers from the store.
func TestAnUnreachableQueueIsA503(t *testing.T) {
	nats, err := natstest.Start(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nats.Stop)
	ts := newTestServer(t, func(c *Config) { c.Dispatch, c.NATSURL = "queue", nats.URL() })
	done := ts.post(t, "/api/chains/testchains/hello_chain/HelloTask?name=before-the-outage&wait=30s")
	if done.Code != http.StatusOK {
		t.Fatalf("a run with NATS up = %d %s", done.Code, done.Message)
	}
	nats.Kill(0)
	// The client learns of the loss from its socket a moment later (under -race on 2 cores, a
	// POST sent at once got in before it and started a run that waits for the queue): the 503s
	// are from then on.
	for deadline := time.Now().Add(10 * time.Second); ts.Server.queue.Conn().IsConnected(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the server's NATS connection still says connected 10 s after its server was killed")
		}
	}
	for _, tc := range []struct{ method, path string }{
		{"POST", "/api/chains/testchains/hello_chain/HelloTask?name=during-the-outage"},
		{"GET", "/api/workers"},
		{"POST", "/api/workers/some-worker/drain"},
	} {
		start := time.Now()
		resp, err := http.DefaultClient.Do(mustRequest(t, tc.method, ts.url+tc.path))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(b), "task queue (NATS) is unreachable") {
			t.Errorf("%s %s with NATS down = %d (Retry-After %q) %s; want 503 naming the task queue", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"), b)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s %s with NATS down took %v; want the answer at once", tc.method, tc.path, took)
		}
	}
	if st := ts.do(t, "GET", done.run.StatusURL); st.Code != http.StatusOK {
		t.Errorf("a status read with NATS down = %d %s; want 200 from the store", st.Code, st.Message)
	}
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
