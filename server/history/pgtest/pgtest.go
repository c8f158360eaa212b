// Package pgtest runs a throwaway PostgreSQL 15 cluster for tests: initdb into a temporary
// folder, postgres on a free loopback port, a fresh database per test. initdb refuses to run as
// root, so under root (CI) both run as the unprivileged user nobody. A test that cannot start it
// fails, naming what is missing; it never skips.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is where Debian's postgresql-15 puts its programs; NECTAR_PG_BIN overrides it.
const BinDir = "/usr/lib/postgresql/15/bin"

// Server is one running cluster.
type Server struct {
	Port int
	dir  string
	cmd  *exec.Cmd
	cred *syscall.Credential
}

var (
	shared     *Server
	sharedErr  error
	sharedOnce sync.Once
)

// Main runs the package's tests and stops the shared cluster afterwards (call it from
// TestMain): one cluster per test binary, one database per test.
func Main(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

// StopShared stops the shared cluster, if one was started (for a TestMain that does more).
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}

// NewDatabase creates an empty database on the shared cluster (started on first use) and returns
// its URL; the database is dropped when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	if sharedErr != nil {
		t.Fatalf("PostgreSQL for the test: %v", sharedErr)
	}
	name := "t_" + randHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, shared.URL("postgres"))
	if err != nil {
		t.Fatalf("PostgreSQL at port %d: %v", shared.Port, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil { // name is ours: t_ + hex
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, shared.URL("postgres")); err == nil {
			c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			c.Close(ctx)
		}
	})
	return shared.URL(name)
}

// URL is the connection URL of database db (trust authentication on loopback: no password).
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://nectar@127.0.0.1:%d/%s?sslmode=disable", s.Port, db)
}

// Start initialises and starts a cluster.
func Start() (*Server, error) {
	bin := os.Getenv("NECTAR_PG_BIN")
	if bin == "" {
		bin = BinDir
	}
	for _, p := range []string{"initdb", "postgres"} {
		if _, err := os.Stat(filepath.Join(bin, p)); err != nil {
			return nil, fmt.Errorf("%s not found in %s: PostgreSQL 15 is needed (`make tools` installs Debian's postgresql-15; NECTAR_PG_BIN names another folder)", p, bin)
		}
	}
	dir, err := os.MkdirTemp("", "nectar-pg-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: dir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse root: run them as nobody, in a folder nobody owns.
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("running PostgreSQL as root needs the user nobody: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	out, err := s.command(filepath.Join(bin, "initdb"), "-D", data, "-U", "nectar", "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions").CombinedOutput()
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	if s.Port, err = freePort(); err != nil {
		s.Stop()
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		s.Stop()
		return nil, err
	}
	defer logf.Close()
	if s.cred != nil {
		os.Chown(logPath, int(s.cred.Uid), int(s.cred.Gid))
	}
	// Durability off: a test cluster is thrown away, and fsync per commit would dominate.
	s.cmd = s.command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(s.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		s.Stop()
		return nil, fmt.Errorf("starting postgres: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			s.cmd = nil
			s.Stop()
			return nil, fmt.Errorf("postgres exited at start (%v):\n%s", err, b)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		cancel()
		if err == nil {
			conn.Close(context.Background())
			go func() { <-exited }()
			return s, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.Stop()
	return nil, errors.New("postgres did not accept connections within 60s")
}

func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: s.cred}
	return cmd
}

// Stop shuts the cluster down at once and removes its folder.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGQUIT) // immediate shutdown
		done := make(chan struct{})
		go func() {
			for i := 0; i < 100 && syscall.Kill(s.cmd.Process.Pid, 0) == nil; i++ {
				time.Sleep(50 * time.Millisecond)
			}
			close(done)
		}()
		<-done
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
	os.RemoveAll(s.dir)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
