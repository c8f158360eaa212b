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
// child outlives a crash), but never once its pid is someone else's: after the reap, the pid
// of a live process belongs to a stranger, maybe a group leader of the same number.
func TestKillGroupSparesAStrangerWithTheReapedPid(t *testing.T) {
	t.Run("the orphans of a reaped plugin are killed", func(t *testing.T) {
		leader := exec.Command("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!")
		leader.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := leader.Output() // returns once the leader exited and was reaped
		if err != nil {
			t.Fatal(err)
		}
		orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
		if err != nil {
			t.Fatalf("leader printed %q", out)
		}
		defer syscall.Kill(orphan, syscall.SIGKILL)
		if !alive(orphan) {
			t.Fatalf("the leader's child %d is not running before the kill", orphan)
		}
		killGroup(leader.Process.Pid, true)
		deadline := time.Now().Add(5 * time.Second)
		for alive(orphan) {
			if time.Now().After(deadline) {
				t.Fatalf("the child %d of reaped group leader %d still runs 5 s after killGroup", orphan, leader.Process.Pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("a live process holding the pid is left alone", func(t *testing.T) {
		stranger := exec.Command("sleep", "60")
		stranger.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // leads a group numbered by its pid
		if err := stranger.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { stranger.Process.Kill(); stranger.Wait() }()
		killGroup(stranger.Process.Pid, true) // as if our plugin of that pid had been reaped
		time.Sleep(100 * time.Millisecond)
		if !alive(stranger.Process.Pid) {
			t.Fatalf("killGroup killed process group %d, led by a live process that is not the reaped plugin", stranger.Process.Pid)
		}
		killGroup(stranger.Process.Pid, false) // not reaped: the group is the plugin's
		if err := stranger.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("a group whose leader is not reaped: leader ended with %v, want killed", err)
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
