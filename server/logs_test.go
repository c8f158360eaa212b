package server

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"nectar/server/runs"
)

// A task's log can be read and followed while it runs, through one signed URL that serves the
// stored log once it ended: on the server running the task, and on an API server whose
// worker runs in another process (it asks that worker for the bytes).
func TestLogsCanBeReadWhileTheTaskRuns(t *testing.T) {
	t.Run("in the server's process", func(t *testing.T) { liveLogs(t, newTestServer(t)) })
	t.Run("on a worker process", func(t *testing.T) { liveLogs(t, &testServer{url: startQueueCluster(t, 1).base}) })
}

func liveLogs(t *testing.T, ts *testServer) {
	a := ts.post(t, "/api/chains/testchains/faults_chain/TickTask?count=8&every=100ms")
	ts.waitRunning(t, a.run.StatusURL)
	st := ts.do(t, "GET", a.run.StatusURL)
	liveURL := st.run.Tasks[0].LogURL
	if !strings.Contains(liveURL, "/api/chainlog?") || strings.Contains(liveURL, "worker=") != (st.run.Tasks[0].Worker != "") {
		t.Fatalf("log_url of a task running on worker %q = %s, want the live log URL naming it", st.run.Tasks[0].Worker, liveURL)
	}

	// Polling with offsets: each answer continues where the last ended.
	time.Sleep(250 * time.Millisecond)
	resp, err := http.Get(liveURL)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	next, _ := strconv.Atoi(resp.Header.Get("X-Next-Offset"))
	if resp.Header.Get("X-Log-Complete") != "false" || next != len(first) || !strings.Contains(string(first), "msg=tick i=0") {
		t.Fatalf("live read = %q (complete %s, next %d)", first, resp.Header.Get("X-Log-Complete"), next)
	}

	// Following from that offset streams the rest and ends with the task.
	start := time.Now()
	resp, err = http.Get(liveURL + "&follow=true&offset=" + strconv.Itoa(next))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	whole := string(first) + string(rest)
	for i := 0; i < 8; i++ {
		if strings.Count(whole, fmt.Sprintf("msg=tick i=%d\n", i)) != 1 {
			t.Errorf("followed log has tick %d %d times, want once:\n%s", i, strings.Count(whole, fmt.Sprintf("msg=tick i=%d\n", i)), whole)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("follow lasted %v after the task ended", took)
	}
	final := ts.poll(t, a.run.StatusURL)
	if *final.JobStatus != runs.Done {
		t.Fatalf("run = %v", final.JobStatus)
	}
	// The same URL now serves the stored log, marked complete.
	resp, err = http.Get(liveURL)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("X-Log-Complete") != "true" || string(stored) != whole {
		t.Errorf("stored log via the live URL (complete %s) differs from the followed one:\n%s\n---\n%s", resp.Header.Get("X-Log-Complete"), stored, whole)
	}
	if strings.Contains(liveURL, "worker=") {
		// A worker that is gone (or never was): the stored log. One that cannot be: 400.
		resp, err := http.Get(strings.Replace(liveURL, "worker=", "worker=gone-1-x", 1))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != whole {
			t.Errorf("the live URL naming a gone worker = %d %q, want the stored log", resp.StatusCode, b)
		}
		if resp, _ := http.Get(strings.Replace(liveURL, "worker=", "worker=%3E", 1)); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("a worker parameter with a wildcard = %d, want 400", resp.StatusCode)
		}
	}
	if resp, _ := http.Get(strings.Replace(liveURL, "signature=", "signature=0", 1)); resp.StatusCode != http.StatusForbidden {
		t.Errorf("tampered live log URL = %d, want 403", resp.StatusCode)
	}
}
