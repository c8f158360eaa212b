package server

import (
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

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
