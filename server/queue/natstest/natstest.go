// Package natstest runs a real NATS cluster on 127.0.0.1 for tests: N nats-server processes
// with JetStream, routed to each other, each with its own folder and free ports. `make test`
// installs the pinned binary into the tool folder; a test that cannot start it fails (it never
// skips), as the project's rules require.
package natstest

import (
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
)

// Version is the pinned nats-server release, the one go.mod requires; the Makefile installs it
// into .tools/nats-server-<Version>/.
const Version = "v2.15.2"

// Binary finds the nats-server executable: $NECTAR_NATS_BIN, else the project's tool folder.
func Binary() (string, error) {
	if p := os.Getenv("NECTAR_NATS_BIN"); p != "" {
		return p, nil
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(filepath.Dir(filepath.Dir(file))))
	p := filepath.Join(root, ".tools", "nats-server-"+Version, "nats-server")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("nats-server is not installed at %s: run `make test` (it installs it) or `make tools`", p)
	}
	return p, nil
}

// Node is one server of the cluster.
type Node struct {
	Name        string
	ClientPort  int
	clusterPort int
	MonitorPort int // the HTTP monitoring endpoint (what KEDA's scaler reads)
	dir         string
	conf        string
	cmd         *exec.Cmd
	exited      chan struct{}
	tls         bool
}

// URL is the node's client URL.
func (n *Node) URL() string {
	if n.tls {
		return fmt.Sprintf("tls://127.0.0.1:%d", n.ClientPort)
	}
	return fmt.Sprintf("nats://127.0.0.1:%d", n.ClientPort)
}

// Cluster is a running set of nodes.
type Cluster struct {
	Nodes []*Node
	bin   string
	dir   string
	// tlsCert and tlsKey, when set, make clients connect over TLS (the monitoring endpoint stays
	// plain HTTP on loopback).
	tlsCert, tlsKey string
	// user and password, when set, are what clients must present.
	user, password string
	extra          string // more configuration, as written
}

// WithConfig adds lines of nats-server configuration to every node's file.
func WithConfig(lines string) Option {
	return func(c *Cluster) { c.extra += lines + "\n" }
}

// Option changes how Start configures the nodes.
type Option func(*Cluster)

// WithUser makes every node require this user and password of its clients.
func WithUser(user, password string) Option {
	return func(c *Cluster) { c.user, c.password = user, password }
}

// WithTLS makes every node require TLS of its clients, with this certificate and key (PEM files).
func WithTLS(certFile, keyFile string) Option {
	return func(c *Cluster) { c.tlsCert, c.tlsKey = certFile, keyFile }
}

// URL lists every node, as a client's seed list.
func (c *Cluster) URL() string {
	var urls []string
	for _, n := range c.Nodes {
		urls = append(urls, n.URL())
	}
	return strings.Join(urls, ",")
}

// Start launches size nodes (1 is a single server, no cluster) and waits until JetStream
// answers on every one.
func Start(size int, opts ...Option) (*Cluster, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "nectar-nats-")
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, dir: dir}
	for _, o := range opts {
		o(c)
	}
	ports, err := freePorts(3 * size)
	if err != nil {
		return nil, err
	}
	for i := range size {
		c.Nodes = append(c.Nodes, &Node{Name: fmt.Sprintf("n%d", i+1), ClientPort: ports[3*i], clusterPort: ports[3*i+1],
			MonitorPort: ports[3*i+2], dir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)), tls: c.tlsCert != ""})
	}
	var routes []string
	for _, n := range c.Nodes {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", n.clusterPort))
	}
	for _, n := range c.Nodes {
		if err := os.MkdirAll(n.dir, 0o700); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\njetstream { store_dir: %q }\n",
			n.Name, n.ClientPort, n.MonitorPort, filepath.Join(n.dir, "js"))
		conf += c.extra
		if c.user != "" {
			conf += fmt.Sprintf("authorization { user: %q\n password: %q\n}\n", c.user, c.password)
		}
		if c.tlsCert != "" {
			conf += fmt.Sprintf("tls { cert_file: %q\n key_file: %q\n}\n", c.tlsCert, c.tlsKey)
		}
		if size > 1 {
			conf += fmt.Sprintf("cluster { name: nectar-test\n listen: 127.0.0.1:%d\n routes: [%s]\n}\n", n.clusterPort, strings.Join(routes, ", "))
		}
		n.conf = filepath.Join(n.dir, "nats.conf")
		if err := os.WriteFile(n.conf, []byte(conf), 0o600); err != nil {
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := c.launch(n); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for _, n := range c.Nodes {
		if err := n.waitJetStream(60 * time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) launch(n *Node) error {
	logf, err := os.OpenFile(filepath.Join(n.dir, "nats.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(c.bin, "-c", n.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting nats-server %s: %w", n.Name, err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(n.exited) }()
	return nil
}

// waitJetStream polls the node's monitoring endpoint until JetStream is up and current (in a
// cluster: its meta group has a leader).
func (n *Node) waitJetStream(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	url := fmt.Sprintf("http://127.0.0.1:%d/healthz", n.MonitorPort)
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return fmt.Errorf("nats-server %s exited at start; its log: %s", n.Name, n.Log())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nats-server %s: JetStream not ready after %s; its log: %s", n.Name, limit, n.Log())
}

// Log is the end of the node's log, for failure messages.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "nats.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Kill SIGKILLs node i and waits for it to be gone.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	if n.cmd != nil && n.cmd.Process != nil {
		syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
}

// Restart starts a killed node again, with its data.
func (c *Cluster) Restart(i int) error {
	n := c.Nodes[i]
	if err := c.launch(n); err != nil {
		return err
	}
	return n.waitJetStream(60 * time.Second)
}

// Stop kills every node and removes their folders.
func (c *Cluster) Stop() {
	for i := range c.Nodes {
		c.Kill(i)
	}
	os.RemoveAll(c.dir)
}

// freePorts reserves n distinct loopback ports (released just before use; a collision with
// another process in between shows as a start failure that names the port).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, errors.Join(errors.New("reserving a port for nats-server"), err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
