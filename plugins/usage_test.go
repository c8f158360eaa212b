package plugins

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ReadUsage reads what the kernel shows in /proc/<pid>/status and stat: a live process's
// figures, nothing of a process that is gone or a zombie (no memory: its peak is not known).
func TestReadUsageReadsTheKernelsFigures(t *testing.T) {
	// A zombie: a child that has exited and is not reaped yet.
	zombie := exec.Command("true")
	if err := zombie.Start(); err != nil {
		t.Fatal(err)
	}
	defer zombie.Wait()
	for deadline := time.Now().Add(5 * time.Second); ; {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(zombie.Process.Pid) + "/stat")
		if strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the child never became a zombie: %s", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; { // CPU that /proc's 10 ms ticks show
	}
	want := statusKB(t, "VmHWM:")
	for _, tc := range []struct {
		name string
		pid  int
		ok   bool
	}{
		{"this process (0)", 0, true},
		{"this process (its pid)", os.Getpid(), true},
		{"a zombie", zombie.Process.Pid, false},
		{"no such process", 1 << 22, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, ok := ReadUsage(tc.pid)
			if ok != tc.ok {
				t.Fatalf("ReadUsage(%d) ok = %v; want %v (%+v)", tc.pid, ok, tc.ok, u)
			}
			if !ok {
				if u != (ProcessUsage{}) {
					t.Errorf("figures %+v of a process not read", u)
				}
				return
			}
			// The peak only grows: it is at least what was read before, and the RSS at most it.
			if u.PeakRSS < want || u.RSS == 0 || u.RSS > u.PeakRSS || u.CPUSeconds <= 0 {
				t.Errorf("ReadUsage(%d) = %+v; want a peak of at least %d, an RSS below it, some CPU", tc.pid, u, want)
			}
		})
	}
}

// statusKB is a field of this process's /proc/self/status, in bytes.
func statusKB(t *testing.T, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.ParseUint(strings.Fields(v)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
