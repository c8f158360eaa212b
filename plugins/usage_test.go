package plugins

import (
	"os"
	"os/exec"
	"runtime/debug"
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

// readProc reads with plain system calls; a file longer than its buffer is read whole, and a
// file that is not there is not read.
func TestReadProcReadsWholeFiles(t *testing.T) {
	want, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		buf  int
		want []byte
	}{
		{"fits the buffer", "/proc/self/cmdline", 64 << 10, want},
		{"longer than the buffer", "/proc/self/cmdline", 8, want},
		{"missing", "/proc/self/no-such-file", 64, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := readProc(tc.path, make([]byte, tc.buf))
			if ok != (tc.want != nil) || string(got) != string(tc.want) {
				t.Errorf("readProc(%s, %d bytes) = %q, %v; want %q", tc.path, tc.buf, got, ok, tc.want)
			}
		})
	}
}

// WriteProc writes to /proc as the server resets a reused plugin's peak (clear_refs 5): the
// kernel's high-water mark falls back to what is resident now. A path it cannot open is an
// error that names it.
func TestWriteProcResetsThePeak(t *testing.T) {
	big := make([]byte, 64<<20)
	for i := range big {
		big[i] = 1
	}
	before, _ := ReadUsage(0)
	big = nil
	debug.FreeOSMemory()
	if err := WriteProc("/proc/self/clear_refs", []byte("5")); err != nil {
		t.Fatal(err)
	}
	after, _ := ReadUsage(0)
	if before.PeakRSS < 64<<20 || after.PeakRSS > before.PeakRSS-32<<20 {
		t.Errorf("peak RSS %d before the reset, %d after; want it to fall by most of the 64 MiB freed", before.PeakRSS, after.PeakRSS)
	}
	err := WriteProc("/proc/self/no-such-file", []byte("5"))
	if err == nil || !strings.Contains(err.Error(), "/proc/self/no-such-file") {
		t.Errorf("WriteProc of a missing file: %v; want an error naming it", err)
	}
}
