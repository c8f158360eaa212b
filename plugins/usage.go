package plugins

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// ProcessUsage is what a process has used so far, as the kernel counts it in /proc: the host
// reads it for the plugin processes it runs (their usage at a run's end, and before it stops
// one), and for itself.
type ProcessUsage struct {
	// CPUSeconds is user + system time, with that of the children it has reaped (as wait4
	// counts them), in /proc's clock ticks: every figure of a process counts this way, so a
	// reused process's use in a run is a plain difference.
	CPUSeconds float64
	PeakRSS    uint64 // bytes: the kernel's high-water mark (VmHWM)
	RSS        uint64 // bytes, now (VmRSS)
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on every Linux Go runs on).
const clockTicks = 100

// procPath is /proc/<pid>/<file>, or /proc/self/<file> for pid 0.
func procPath(pid int, file string) string {
	if pid == 0 {
		return "/proc/self/" + file
	}
	return "/proc/" + strconv.Itoa(pid) + "/" + file
}

// readProc reads a small /proc file into buf (no stat, no growing: these files are a few
// hundred bytes to 2 KB), or whole if it fills buf. It uses plain system calls: os.Open offers
// every file to the network poller (two fcntl, an epoll_ctl that /proc refuses, two fcntl
// back), five calls more than the open, reads and close, and a run's end reads two of these
// files before its waiters are answered.
func readProc(path string, buf []byte) ([]byte, bool) {
	fd, err := openNoEINTR(path, syscall.O_RDONLY)
	if err != nil {
		return nil, false
	}
	n := 0
	for n < len(buf) {
		m, err := syscall.Read(fd, buf[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil || m <= 0 {
			break
		}
		n += m
	}
	syscall.Close(fd)
	if n == len(buf) { // longer than ever seen: read it whole
		b, err := os.ReadFile(path)
		return b, err == nil && len(b) > 0
	}
	return buf[:n], n > 0
}

// WriteProc writes b to a /proc file (such as clear_refs) with plain system calls, as readProc
// reads them.
func WriteProc(path string, b []byte) error {
	fd, err := openNoEINTR(path, syscall.O_WRONLY)
	if err != nil {
		return &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer syscall.Close(fd)
	for {
		_, err = syscall.Write(fd, b)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return &os.PathError{Op: "write", Path: path, Err: err}
	}
	return nil
}

func openNoEINTR(path string, mode int) (int, error) {
	for {
		fd, err := syscall.Open(path, mode|syscall.O_CLOEXEC, 0)
		if err != syscall.EINTR {
			return fd, err
		}
	}
}

// CPUSeconds is the CPU seconds pid (0: this process) used, with its reaped children's, from
// /proc/<pid>/stat.
func CPUSeconds(pid int) (float64, bool) {
	var buf [1024]byte
	b, ok := readProc(procPath(pid, "stat"), buf[:])
	if !ok {
		return 0, false
	}
	// The command name may hold spaces and parentheses: fields count from the last ')'.
	end := bytes.LastIndexByte(b, ')')
	if end < 0 {
		return 0, false
	}
	f := bytes.Fields(b[end+1:])
	if len(f) < 15 { // state is f[0]; utime, stime, cutime, cstime are f[11:15]
		return 0, false
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += n
	}
	return float64(ticks) / clockTicks, true
}

// ReadUsage reads pid's usage (0: this process's); ok is false if the process is gone, or
// has no memory left (a zombie).
func ReadUsage(pid int) (u ProcessUsage, ok bool) {
	if u.CPUSeconds, ok = CPUSeconds(pid); !ok {
		return ProcessUsage{}, false
	}
	var buf [4096]byte
	b, ok := readProc(procPath(pid, "status"), buf[:])
	if !ok {
		return ProcessUsage{}, false
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if v, found := bytes.CutPrefix(line, []byte("VmHWM:")); found {
			u.PeakRSS = kilobytes(v)
		} else if v, found := bytes.CutPrefix(line, []byte("VmRSS:")); found {
			u.RSS = kilobytes(v)
		}
	}
	if u.PeakRSS == 0 { // a zombie: no memory, and its peak is not known
		return ProcessUsage{}, false
	}
	return u, true
}

// kilobytes reads a /proc/<pid>/status size ("  1234 kB") in bytes.
func kilobytes(v []byte) uint64 {
	n, _ := strconv.ParseUint(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
	return n << 10
}
