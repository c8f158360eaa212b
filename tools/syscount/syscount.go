// Package syscount counts the system calls a running process makes on the files under a
// folder (a store), with strace: the figure behind "system calls per task" in the benchmark
// and the test that keeps it low. Child processes the traced one starts meanwhile (plugins)
// are left out: only its own threads count.
package syscount

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Trace is strace attached to one process.
type Trace struct {
	cmd  *exec.Cmd
	out  string
	root string
	pid  int
}

// traced are the calls strace reports: those that take a path or a descriptor, the syncs, and
// the clones that tell the process's threads from its children.
const traced = "%file,%desc,fsync,fdatasync,syncfs,sync_file_range,clone,clone3,fork,vfork"

// Start attaches strace to pid (all its threads) and counts calls on files under root. It
// fails when strace is missing (Debian's strace package) or cannot attach.
func Start(pid int, root string) (*Trace, error) {
	bin, err := exec.LookPath("strace")
	if err != nil {
		return nil, errors.New("strace is not installed (make tools installs Debian's strace)")
	}
	f, err := os.CreateTemp("", "syscount-*.txt")
	if err != nil {
		return nil, err
	}
	f.Close()
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	t := &Trace{out: f.Name(), root: abs, pid: pid}
	// -y names each descriptor's file, so a write to a store file is told from one to a socket.
	t.cmd = exec.Command(bin, "-f", "-qq", "-y", "-s", "0", "-e", "trace="+traced, "-o", t.out, "-p", strconv.Itoa(pid))
	t.cmd.Stderr = os.Stderr
	if err := t.cmd.Start(); err != nil {
		os.Remove(t.out)
		return nil, err
	}
	// strace writes nothing until it has attached; give it a moment to seize every thread.
	time.Sleep(300 * time.Millisecond)
	return t, nil
}

// Counts are the calls on the store's files by name, and their total.
type Counts struct {
	Total  int
	ByCall map[string]int
}

// String lists the calls, most frequent first.
func (c Counts) String() string {
	type kv struct {
		k string
		v int
	}
	var l []kv
	for k, v := range c.ByCall {
		l = append(l, kv{k, v})
	}
	sort.Slice(l, func(i, j int) bool { return l[i].v > l[j].v || l[i].v == l[j].v && l[i].k < l[j].k })
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", e.k, e.v)
	}
	return b.String()
}

// Stop detaches strace and counts what it saw.
func (t *Trace) Stop() (Counts, error) {
	defer os.Remove(t.out)
	t.cmd.Process.Signal(syscall.SIGINT)
	t.cmd.Wait()
	f, err := os.Open(t.out)
	if err != nil {
		return Counts{}, err
	}
	defer f.Close()
	return count(f, t.pid, t.root)
}

var (
	lineRE   = regexp.MustCompile(`^(\d+)\s+(.*)$`)
	callRE   = regexp.MustCompile(`^([a-z_0-9]+)\(`)
	resultRE = regexp.MustCompile(`= (\d+)`)
)

// count reads strace -f output: each line starts with the thread id. A clone without
// CLONE_THREAD starts another process, whose calls (and its children's) are not pid's.
func count(f *os.File, pid int, root string) (Counts, error) {
	c := Counts{ByCall: map[string]int{}}
	foreign := map[int]bool{}
	pendingClone := map[int]bool{} // tid -> its unfinished clone makes a process (not a thread)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := lineRE.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		tid, _ := strconv.Atoi(m[1])
		rest := m[2]
		if strings.HasPrefix(rest, "<... ") { // the end of an unfinished call
			if process, ok := pendingClone[tid]; ok {
				delete(pendingClone, tid)
				if r := resultRE.FindStringSubmatch(rest); r != nil && (process || foreign[tid]) {
					child, _ := strconv.Atoi(r[1])
					foreign[child] = true
				}
			}
			continue
		}
		cm := callRE.FindStringSubmatch(rest)
		if cm == nil {
			continue // a signal, an exit
		}
		call := cm[1]
		if call == "clone" || call == "clone3" || call == "fork" || call == "vfork" {
			process := !strings.Contains(rest, "CLONE_THREAD")
			if strings.Contains(rest, "<unfinished ...>") {
				pendingClone[tid] = process
			} else if r := resultRE.FindStringSubmatch(rest); r != nil && (process || foreign[tid]) {
				child, _ := strconv.Atoi(r[1])
				foreign[child] = true
			}
			continue
		}
		if foreign[tid] || !strings.Contains(rest, root) {
			continue
		}
		c.Total++
		c.ByCall[call]++
	}
	return c, sc.Err()
}
