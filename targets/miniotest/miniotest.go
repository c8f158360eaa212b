// Package miniotest runs a real MinIO server on 127.0.0.1 for tests: a free port, a temporary
// folder, fresh credentials and one bucket. `make test` installs the pinned binary; a test that
// cannot start it fails (it never skips), as the project's rules require.
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the pinned MinIO release (go install github.com/minio/minio@Version); the Makefile
// installs the same one into .tools/minio-<Version>/.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Server is one running MinIO.
type Server struct {
	Endpoint  string // 127.0.0.1:port
	AccessKey string
	SecretKey string
	Bucket    string
	dir       string
	bin       string
	cmd       *exec.Cmd
}

// Binary finds the MinIO executable: $NECTAR_MINIO_BIN, else the project's tool folder.
func Binary() (string, error) {
	if p := os.Getenv("NECTAR_MINIO_BIN"); p != "" {
		return p, nil
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
	p := filepath.Join(root, ".tools", "minio-"+Version, "minio")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("MinIO is not installed at %s: run `make test` (it installs it) or `make tools`", p)
	}
	return p, nil
}

// Start launches MinIO and creates a bucket.
func Start() (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nectar-minio-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir, bin: bin, AccessKey: "nectar" + randHex(6), SecretKey: randHex(20), Bucket: "nectar-test"}
	if s.Endpoint, err = freeAddr(); err != nil {
		return nil, err
	}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	client, err := minio.New(s.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
	if err == nil {
		err = client.MakeBucket(context.Background(), s.Bucket, minio.MakeBucketOptions{})
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("creating bucket %s on MinIO at %s: %w", s.Bucket, s.Endpoint, err)
	}
	return s, nil
}

func (s *Server) start() error {
	console, err := freeAddr()
	if err != nil {
		return err
	}
	cmd := exec.Command(s.bin, "server", s.dir, "--address", s.Endpoint, "--console-address", console, "--quiet")
	cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CI_CD=1")
	logf, err := os.Create(filepath.Join(s.dir, "..", filepath.Base(s.dir)+".log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting MinIO (%s): %w", s.bin, err)
	}
	s.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			out, _ := os.ReadFile(logf.Name())
			return fmt.Errorf("MinIO exited at start (%v):\n%s", err, out)
		default:
		}
		resp, err := http.Get("http://" + s.Endpoint + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				go func() { <-exited }()
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New("MinIO did not become healthy within 60s at " + s.Endpoint)
}

// Kill stops the server at once (the data folder stays, so Restart brings the bucket back).
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		for i := 0; i < 100 && syscall.Kill(s.cmd.Process.Pid, 0) == nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
		s.cmd = nil
	}
}

// Freeze stops the server's processes without ending them (SIGSTOP): its port still takes
// connections, which get no answer, as from a hung server or a blackholed endpoint. Thaw
// resumes it.
//
// It returns once every thread of the server is stopped. A stop is not instant: the kernel
// wakes one thread, which stops the others when it next runs; on a busy machine another
// thread, woken meanwhile by a request, could still answer it.
func (s *Server) Freeze() {
	s.signal(syscall.SIGSTOP)
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	for deadline := time.Now().Add(10 * time.Second); !allStopped(s.cmd.Process.Pid) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

// allStopped reports whether every thread of process pid is stopped (state T in /proc).
func allStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // a thread that ended
		}
		// pid (comm) state ...: comm may hold spaces and parentheses; the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
			return false
		}
	}
	return len(stats) > 0
}

// Thaw resumes a frozen server.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

// Restart starts the server again on the same address and folder.
func (s *Server) Restart() error {
	s.Kill()
	return s.start()
}

// Stop kills the server and removes its data.
func (s *Server) Stop() {
	s.Kill()
	os.RemoveAll(s.dir)
	os.Remove(s.dir + ".log")
}

// URL is the endpoint as an http URL.
func (s *Server) URL() string { return "http://" + s.Endpoint }

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Main is a TestMain for packages whose every test needs MinIO: it starts one into *srv, runs
// the tests, stops it, and fails the package loudly if MinIO cannot start.
func Main(m interface{ Run() int }, srv **Server) {
	s, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: these tests need a real MinIO:", err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	s.Stop()
	os.Exit(code)
}
