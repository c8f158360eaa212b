package server

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// Status reads of a stored run answer from its record's version: a rerun of the key
// (?force=true) writes a new record, and the next read, in the same second as a read of the
// old one, shows the new run. A POST of a task already done answers the same in one second, and
// its URLs work. ?pretty is indented, never the cached compact answer.
func TestHotReadsFollowTheStoredRecord(t *testing.T) {
	ts := newTestServer(t)
	const path = "/api/chains/testchains/hello_chain/HelloTask?name=answers&wait=30s"
	raw := func(u string) string {
		t.Helper()
		code, body := fetch(t, u)
		if code != http.StatusOK {
			t.Fatalf("GET %s = %d %s", u, code, body)
		}
		return body
	}
	first := ts.do(t, "POST", path)
	if first.Code != http.StatusOK || first.run.JobStatus == nil || *first.run.JobStatus != "DONE" {
		t.Fatalf("POST = %d %s", first.Code, first.Data)
	}
	status := first.run.StatusURL
	sameSecond := false
	for try := 0; try < 5 && !sameSecond; try++ {
		for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(5 * time.Millisecond) {
			if _, running := ts.Server.runs.Active(first.run.Key); !running {
				break // its record is stored, and status reads come from the store
			}
		}
		before := raw(status)
		at := time.Now().Unix()
		rerun := ts.do(t, "POST", path+"&force=true")
		if rerun.Code != http.StatusOK || rerun.run.SubmittedAt == nil {
			t.Fatalf("POST ?force=true = %d %s", rerun.Code, rerun.Data)
		}
		after := ts.do(t, "GET", status)
		sameSecond = time.Now().Unix() == at
		if after.run.SubmittedAt == nil || !after.run.SubmittedAt.Equal(*rerun.run.SubmittedAt) {
			t.Fatalf("after a rerun the status shows the run submitted at %v; want the rerun's, %v (the read before it: %s)", after.run.SubmittedAt, rerun.run.SubmittedAt, before)
		}
	}
	if !sameSecond {
		t.Logf("no try read the old and the new record in one second (a slow machine): the version was not what told them apart")
	}

	done1, done2 := ts.do(t, "POST", strings.TrimSuffix(path, "&wait=30s")), ts.do(t, "POST", strings.TrimSuffix(path, "&wait=30s"))
	for _, a := range []answer{done1, done2} {
		if a.Code != http.StatusOK || a.Message != "already done" {
			t.Fatalf("POST of a done task = %d %q", a.Code, a.Message)
		}
		if code, body := fetch(t, a.run.ResourceURL); code != http.StatusOK || body != "hello answers\n" {
			t.Errorf("the done answer's resource_url = %d %q", code, body)
		}
	}
	if pretty := raw(status + "&pretty"); !strings.Contains(pretty, "\n  \"status\": 200") {
		t.Errorf("?pretty answered %q; want indented JSON", pretty[:min(len(pretty), 80)])
	}
	if pretty := raw(status + "&%70retty"); !strings.Contains(pretty, "\n  \"status\": 200") { // its name escaped
		t.Errorf("?%%70retty answered %q; want indented JSON", pretty[:min(len(pretty), 80)])
	}
}
