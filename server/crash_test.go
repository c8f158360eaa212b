package server

import (
	"fmt"
	"io/fs"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"nectar/server/runs"
)

// SIGKILL of the server, or of the plugin running the tasks, at a random point of a
// 1,000-leaf fan-in, round after round: no out is ever partial (every leaf's out is its whole
// line), and a POST of the same task afterwards resumes and finishes with the right sum.
func TestKillsDuringABigFanIn(t *testing.T) {
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewSource(seed))
	t.Logf("seed %d", seed)
	target := t.TempDir()
	ts := &testServer{}
	base, cmd := startBinary(t, target)
	leafOut := regexp.MustCompile(`^\d+\n$`)
	for round, victim := range []string{"server", "plugin", "server", "plugin", "server"} {
		path := fmt.Sprintf("/api/chains/testchains/fanin_chain/JoinTask?leaves=1000&salt=crash%d", round)
		a := ts.do(t, http.MethodPost, base+path)
		if a.Code != http.StatusAccepted {
			t.Fatalf("round %d: POST = %d %s", round, a.Code, a.Message)
		}
		time.Sleep(time.Duration(20+rng.Intn(400)) * time.Millisecond) // somewhere in the run
		switch victim {
		case "server":
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			base, cmd = startBinary(t, target)
		case "plugin":
			kids := childrenOf(cmd.Process.Pid)
			if len(kids) == 0 {
				t.Logf("round %d: the run ended before the kill", round)
			}
			for _, pid := range kids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			// The run goes on in a new process; the tasks the kill cut short failed, so it ends
			// FAILED (or DONE, if the kill came late): a POST meanwhile would join it.
			ts.poll(t, a.run.StatusURL)
		}
		checkNoPartialOut(t, target, leafOut)
		b := ts.do(t, http.MethodPost, base+path+"&wait=60s")
		if b.Code != 200 || *b.run.JobStatus != runs.Done {
			t.Fatalf("round %d (%s killed): the re-POST = %d %v %v", round, victim, b.Code, b.run.JobStatus, b.run.Error)
		}
		if got, _ := os.ReadFile(filepath.Join(target, b.run.Key, runs.OutName)); string(got) != "499500\n" {
			t.Fatalf("round %d: the join's out = %q, want the sum of 0..999", round, got)
		}
		checkNoPartialOut(t, target, leafOut)
	}
}

// checkNoPartialOut fails on any leaf out that is not one whole line, and on any out that is
// empty.
func checkNoPartialOut(t *testing.T, target string, leafOut *regexp.Regexp) {
	t.Helper()
	n := 0
	filepath.WalkDir(filepath.Join(target, "chains"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != runs.OutName {
			return nil
		}
		n++
		b, err := os.ReadFile(p)
		switch {
		case err != nil:
			t.Errorf("%s: %v", p, err)
		case strings.Contains(p, "/LeafTask/") && !leafOut.Match(b):
			t.Errorf("partial out %s: %q", p, b)
		case len(b) == 0:
			t.Errorf("empty out %s", p)
		}
		return nil
	})
	if n == 0 {
		t.Logf("no out yet")
	}
}

// childrenOf lists the processes pid started (its threads' children).
func childrenOf(pid int) []int {
	var kids []int
	threads, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, th := range threads {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, th.Name()))
		for _, f := range strings.Fields(string(b)) {
			if k, err := strconv.Atoi(f); err == nil {
				kids = append(kids, k)
			}
		}
	}
	return kids
}
