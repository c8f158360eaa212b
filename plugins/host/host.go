// Package host starts chain-type plugin processes and hands back a plugins.Runner to drive them.
// It owns process lifecycle only (start, kill, exit status); what runs when is the server's job.
package host

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"nectar/plugins"
)

// ErrNoPlugin means no binary exists for the chain type (the catalog and the build disagree).
var ErrNoPlugin = errors.New("plugin binary not found")

// Launcher starts plugin binaries found in Dir (one per chain type, named after it), each
// checked against the SHA-256 that `make build` recorded beside it (<type>.sha256).
type Launcher struct {
	dir       string
	socketDir string
	env       []string
	logger    hclog.Logger
	host      plugins.Host // served to each plugin (nil: none)

	mu       sync.Mutex
	verified map[string]fileID // chain type -> identity of the file last hashed and found good
	killed   *sync.Map         // processes killed on purpose, whose exit is no error to log
}

// fileID identifies a file's content without reading it: if any of these change, hash again.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

func idOf(fi os.FileInfo) fileID {
	st, _ := fi.Sys().(*syscall.Stat_t)
	if st == nil {
		return fileID{}
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// ErrTampered means a plugin binary differs from the hash recorded when it was built.
var ErrTampered = errors.New("plugin binary does not match the hash recorded at build time")

var typeName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// SocketPrefix begins the name of a launcher's socket folder (ProcessTempDir).
const SocketPrefix = "nectar-sock-"

// NewLauncher checks dir and makes a private (0700) folder for the plugins' Unix sockets, so no
// other user on the machine can connect to a plugin.
func NewLauncher(dir string, logger *slog.Logger) (*Launcher, error) {
	if logger == nil {
		logger = slog.Default()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("plugin folder %s: %w (run `make build`)", abs, ErrNoPlugin)
	}
	sock, err := ProcessTempDir(SocketPrefix) // one a killed server left is swept
	if err != nil {
		return nil, fmt.Errorf("plugin socket folder: %w", err)
	}
	killed := &sync.Map{}
	return &Launcher{
		killed:    killed,
		dir:       abs,
		verified:  map[string]fileID{},
		socketDir: sock,
		env:       pluginEnv(os.Environ()),
		logger:    hclog.New(&hclog.LoggerOptions{Name: "plugin", Level: hclog.Warn, Output: slogWriter{l: logger, killed: killed}}),
	}, nil
}

// pluginEnv passes the host environment minus Nectar's and the clouds' secrets: user code has
// no business reading the API tokens, the signing key or the store's credentials.
func pluginEnv(environ []string) []string {
	var env []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "NECTAR_"), strings.HasPrefix(k, "AWS_"), strings.HasPrefix(k, "MINIO_"),
			strings.HasPrefix(k, "PLUGIN_"):
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Current reports whether p was started from the binary now installed for chainType.
func (l *Launcher) Current(chainType string, p *Process) bool {
	bin, err := l.BinaryPath(chainType)
	if err != nil {
		return false
	}
	fi, err := os.Stat(bin)
	return err == nil && idOf(fi) == p.bin
}

// SetHost sets what plugins started from now on may ask of the host (source reads). Call it
// before the first Start.
func (l *Launcher) SetHost(h plugins.Host) { l.host = h }

// SocketDir is the private folder of the plugins' Unix sockets.
func (l *Launcher) SocketDir() string { return l.socketDir }

// Close removes the socket folder.
func (l *Launcher) Close() error { return os.RemoveAll(l.socketDir) }

// BinaryPath is where the plugin for chainType must be.
func (l *Launcher) BinaryPath(chainType string) (string, error) {
	if !typeName.MatchString(chainType) {
		return "", fmt.Errorf("chain type %q: %w", chainType, ErrNoPlugin)
	}
	p := filepath.Join(l.dir, chainType)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s: %w (run `make build`)", p, ErrNoPlugin)
	}
	return p, nil
}

// Verify checks the plugin of chainType against its recorded hash (hashing only when the file
// changed since the last check) and returns it open: the process is started from this very
// file descriptor, so the file checked is the file run.
func (l *Launcher) Verify(chainType string) (*os.File, error) {
	bin, err := l.BinaryPath(chainType)
	if err != nil {
		return nil, err
	}
	want, err := os.ReadFile(bin + ".sha256")
	if err != nil {
		return nil, fmt.Errorf("%s.sha256: %w (run `make build`)", bin, ErrTampered)
	}
	wantHex, _, _ := strings.Cut(strings.TrimSpace(string(want)), " ")
	f, err := os.Open(bin)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	id := idOf(fi)
	l.mu.Lock()
	ok := l.verified[chainType] == id && id != (fileID{})
	l.mu.Unlock()
	if ok {
		return f, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantHex {
		// A rebuild (nectar dev) renames the new binary into place, then its hash: a check
		// that falls between the two waits a moment for the hash rather than fail the run.
		if !l.hashCatchesUp(bin, wantHex, got) {
			f.Close()
			return nil, fmt.Errorf("%s: %w (sha256 %s, recorded %s): rebuild with `make build`", bin, ErrTampered, got[:12], short(wantHex))
		}
	}
	l.mu.Lock()
	l.verified[chainType] = id
	l.mu.Unlock()
	return f, nil
}

// hashCatchesUp waits up to a second for bin's recorded hash to change from stale to got.
func (l *Launcher) hashCatchesUp(bin, stale, got string) bool {
	for range 20 {
		time.Sleep(50 * time.Millisecond)
		b, err := os.ReadFile(bin + ".sha256")
		if err != nil {
			return false
		}
		now, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		if now != stale {
			return now == got
		}
	}
	return false
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// Process is one running plugin.
type Process struct {
	plugins.Runner
	client *plugin.Client
	cmd    *exec.Cmd
	pid    int
	bin    fileID // the binary it was started from
	once   sync.Once
	killed *sync.Map // the launcher's: a kill on purpose is marked there
	// started is the plugin's start time (procStart): a process holding its pid later is the
	// plugin only if it started then.
	started string
	// hostPeak is the host's own peak RSS just after the start: wait4's peak of the plugin is
	// at least the host's at the exec (Usage).
	hostPeak uint64
}

// OutputEnv names the file a plugin points its fd 2, os.Stdout and os.Stderr at. The kernel
// keeps every byte written there even if the process dies the next instant, which a pipe read
// by a goroutine would not.
const OutputEnv = "NECTAR_PLUGIN_OUTPUT"

// Start launches the plugin for chainType. Everything it writes (user prints, its own logs, the
// stack of a crash) is appended to output, which must be opened with O_APPEND.
func (l *Launcher) Start(chainType string, output *os.File) (*Process, error) {
	f, err := l.Verify(chainType)
	if err != nil {
		return nil, err
	}
	defer f.Close() // after the exec: the child runs the verified file, not whatever is at the path now
	var bin fileID
	if fi, err := f.Stat(); err == nil {
		bin = idOf(fi)
	}
	cmd := exec.Command(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	cmd.Env = append(append([]string{}, l.env...), plugin.EnvUnixSocketDir+"="+l.socketDir)
	if output != nil {
		cmd.Env = append(cmd.Env, OutputEnv+"="+output.Name())
	}
	var sink io.Writer = io.Discard
	if output != nil {
		sink = output
	}
	// Own process group so a kill takes the task's children too; SIGKILL if the host dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		Plugins:          plugins.HostPluginSet(l.host),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		SkipHostEnv:      true,
		Stderr:           sink, // what the plugin wrote to fd 2 before redirecting it
		SyncStdout:       sink,
		SyncStderr:       sink,
		Logger:           l.logger,
		StartTimeout:     30 * time.Second,
	})
	rpc, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("starting plugin %s: %w", chainType, err)
	}
	raw, err := rpc.Dispense(plugins.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: %w", chainType, err)
	}
	p := &Process{Runner: raw.(plugins.Runner), client: client, cmd: cmd, bin: bin, killed: l.killed, hostPeak: selfPeakRSS()}
	if cmd.Process != nil {
		p.pid = cmd.Process.Pid
		p.started, _ = procStart(p.pid) // it runs: its handshake has just answered
	}
	return p, nil
}

// Pid is the plugin's process id (and process group id).
func (p *Process) Pid() int { return p.pid }

// Exited reports whether the process has ended (crashed, called os.Exit or was killed).
func (p *Process) Exited() bool { return p.client.Exited() }

// ExitStatus says how the process ended ("exit status 3", "signal: killed"); "" while it runs.
func (p *Process) ExitStatus() string {
	if !p.client.Exited() || p.cmd.ProcessState == nil {
		return ""
	}
	return p.cmd.ProcessState.String()
}

// Usage is what the ended process used, from the kernel's accounting (wait4's rusage): CPU
// seconds (user + system) and peak resident memory, 0 when not known. ok is false while it
// runs.
//
// The kernel's peak of a started process is at least its starter's peak at the exec (Linux
// keeps the larger of the two: Go starts a process sharing the host's memory until its exec),
// so a plugin that stayed smaller than this server is reported as big as the server. Above the
// host's peak just after the start, the figure can only be the process's (or its children's);
// below it, it is not known: a process still running is better read from /proc (VmHWM) before
// it is stopped.
func (p *Process) Usage() (cpuSeconds float64, peakRSS uint64, ok bool) {
	if !p.client.Exited() || p.cmd.ProcessState == nil {
		return 0, 0, false
	}
	st := p.cmd.ProcessState
	cpu := (st.UserTime() + st.SystemTime()).Seconds()
	if ru, _ := st.SysUsage().(*syscall.Rusage); ru != nil {
		if b := uint64(ru.Maxrss) << 10; b > p.hostPeak { // kilobytes on Linux
			peakRSS = b
		}
	}
	return cpu, peakRSS, true
}

// selfPeakRSS is this process's peak resident memory (VmHWM), in bytes; 0 if unreadable,
// which lets any figure above it stand.
func selfPeakRSS() uint64 {
	u, _ := plugins.ReadUsage(0)
	return u.PeakRSS
}

// Kill stops the plugin: a graceful shutdown first (go-plugin waits briefly), then SIGKILL to
// the whole process group so no grandchild outlives the run.
func (p *Process) Kill() {
	p.once.Do(func() {
		p.client.Kill()
		killGroup(p.pid, p.started)
	})
}

// KillNow SIGKILLs the process group at once (cancel, timeout, a run's end), then reaps it.
func (p *Process) KillNow() {
	if p.pid > 0 && p.killed != nil {
		p.killed.Store(strconv.Itoa(p.pid), true)
	}
	killGroup(p.pid, p.started)
	p.Kill()
}

// killGroup SIGKILLs the process group a plugin leads: the plugin and whatever its tasks
// started. The kernel gives a pid to a new process only once no process, group or session
// uses that number. So while a process holds the plugin's pid, the group is the plugin's only
// if that process is the plugin (alive, or exited and not yet reaped: its start time, started,
// says so); a stranger holding the pid may lead a group of the same number, which is left
// alone. While none holds it, what is left of the group is the plugin's children. A start
// time not known ("") kills the group.
func killGroup(pid int, started string) {
	if pid <= 0 {
		return
	}
	if now, ok := procStart(pid); ok && started != "" && now != started {
		return
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// procStart is when process pid started (field 22 of /proc/<pid>/stat: clock ticks since
// boot); ok is false when there is no such process.
func procStart(pid int) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return "", false
	}
	i := bytes.LastIndexByte(b, ')') // the command name before it may hold anything
	if i < 0 {
		return "", false
	}
	f := strings.Fields(string(b[i+1:])) // from field 3 (the state) on
	if len(f) < 20 {
		return "", false
	}
	return f[19], true
}

// slogWriter lets go-plugin's hclog logger write into the server's slog output. go-plugin
// reports every exit as an error; the exit of a process the host killed on purpose (a run's
// end, a spare no longer needed) is not one, and is dropped.
type slogWriter struct {
	l      *slog.Logger
	killed *sync.Map // pid (as "id=<pid>") -> killed on purpose
}

var exitLine = regexp.MustCompile(`plugin process exited: .* id=(\d+) `)

func (w slogWriter) Write(b []byte) (int, error) {
	if m := exitLine.FindSubmatch(b); m != nil && w.killed != nil {
		if _, ok := w.killed.LoadAndDelete(string(m[1])); ok {
			return len(b), nil
		}
	}
	w.l.Warn(strings.TrimSpace(string(b)), "source", "go-plugin")
	return len(b), nil
}
