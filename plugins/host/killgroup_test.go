package host

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A plugin's process group is killed whole, even after the plugin itself is gone (a task's
// child outlives a crash), but never once its pid is someone else's: a live process holding
// the pid that did not start when the plugin did is a stranger, maybe a group leader of the
// same number.
func TestKillGroupSparesAStrangerWithThePluginsPid(t *testing.T) {
	t.Run("the orphans of a plugin that exited are killed", func(t *testing.T) {
		leader := exec.Command("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!; read x")
		leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdin, err := leader.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := leader.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := leader.Start(); err != nil {
			t.Fatal(err)
		}
		started, ok := procStart(leader.Process.Pid)
		if !ok {
			t.Fatalf("no start time for the running leader %d", leader.Process.Pid)
		}
		line := make([]byte, 32)
		n, _ := stdout.Read(line)
		orphan, err := strconv.Atoi(strings.TrimSpace(string(line[:n])))
		if err != nil {
			t.Fatalf("leader printed %q", line[:n])
		}
		defer syscall.Kill(orphan, syscall.SIGKILL)
		stdin.Close() // the leader exits, and is reaped: its child stays in the group
		leader.Wait()
		if !alive(orphan) {
			t.Fatalf("the leader's child %d is not running before the kill", orphan)
		}
		killGroup(leader.Process.Pid, started)
		deadline := time.Now().Add(5 * time.Second)
		for alive(orphan) {
			if time.Now().After(deadline) {
				t.Fatalf("the child %d of group leader %d, gone, still runs 5 s after killGroup", orphan, leader.Process.Pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("a live process holding the pid is the plugin only if it started then", func(t *testing.T) {
		proc := exec.Command("sleep", "60")
		proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // leads a group numbered by its pid
		if err := proc.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { proc.Process.Kill(); proc.Wait() }()
		started, ok := procStart(proc.Process.Pid)
		if !ok {
			t.Fatalf("no start time for running process %d", proc.Process.Pid)
		}
		killGroup(proc.Process.Pid, started+"0") // as if the plugin of that pid had started at another time
		time.Sleep(100 * time.Millisecond)
		if !alive(proc.Process.Pid) {
			t.Fatalf("killGroup killed process group %d, led by a process that is not the plugin", proc.Process.Pid)
		}
		killGroup(proc.Process.Pid, started)
		if err := proc.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("the plugin's own group: its leader ended with %v, want killed", err)
		}
	})
}

// alive reports whether pid runs (a zombie waiting for its parent's reap counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}
