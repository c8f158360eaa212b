package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"nectar/plugins/host"
)

// The floors of the per-run and per-task goals, measured on this machine at the time of the
// run: the goals were set on a machine where a warm gRPC call took ~0.2 ms and an exec ~7 ms,
// so these rows say how much of each budget the machine alone takes today.

// warmCallRow times one gRPC call to a plugin process already running (a graph request of
// HelloTask: the smallest call the server makes).
func warmCallRow(launcher *host.Launcher, runs int) (row, error) {
	p, err := launcher.Start("testchains", nil)
	if err != nil {
		return row{}, err
	}
	defer p.Kill()
	d, err := measure(runs*4, func(int) error {
		_, err := p.Graph(context.Background(), graphReq())
		return err
	})
	if err != nil {
		return row{}, err
	}
	return row{"floor: one warm gRPC call to a plugin", ms(pct(d, 50)), ms(pct(d, 95)), "", ""}, nil
}

// durableWriteRow times the smallest durable write a store makes: create, write, fsync and
// rename a small file, in the folder benchmarks use as their target.
func durableWriteRow(runs int) (row, error) {
	dir, err := scratch("nectar-bench-floor-")
	if err != nil {
		return row{}, err
	}
	d, err := measure(runs*4, func(i int) error {
		tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", i))
		f, err := os.Create(tmp)
		if err != nil {
			return err
		}
		_, err = f.WriteString("hello bench\n")
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, fmt.Sprintf("out-%d", i)))
	})
	if err != nil {
		return row{}, err
	}
	return row{"floor: one small durable write (create, write, fsync, rename)", ms(pct(d, 50)), ms(pct(d, 95)), "", ""}, nil
}

// leafFilesRow times, one task after another, the file-system calls a fan-in leaf makes on
// the local store at the least: the server asks whether its out exists (stat) and makes its
// key's folder (mkdir); the plugin creates and writes its out (a leaf logs nothing: no log
// file, which the server's stats find: none staged, none held by the key); the server renames
// the out into place. The syncs are batched across tasks (one syncfs per
// batch) and left out.
// Like the fan-ins, every task gets a fresh folder, beside thousands of others.
func leafFilesRow(n int) (row, error) {
	dir, err := scratch("nectar-bench-floor-")
	if err != nil {
		return row{}, err
	}
	parent := filepath.Join(dir, "chains", "testchains", "fanin_chain", "LeafTask")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return row{}, err
	}
	leaf := func(i int) error {
		key := filepath.Join(parent, fmt.Sprintf("%032x", i))
		if _, err := os.Stat(filepath.Join(key, "out")); !os.IsNotExist(err) {
			return fmt.Errorf("stat of a fresh out: %v", err)
		}
		if err := os.Mkdir(key, 0o755); err != nil {
			return err
		}
		for _, log := range []string{".stage-log", "log"} { // made by the plugin? held by the key?
			if _, err := os.Lstat(filepath.Join(key, log)); !os.IsNotExist(err) {
				return fmt.Errorf("stat of a log never made: %v", err)
			}
		}
		stage := filepath.Join(key, ".stage-out")
		if err := os.WriteFile(stage, []byte("leaf\n"), 0o644); err != nil {
			return err
		}
		return os.Rename(stage, filepath.Join(key, "out"))
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		if err := leaf(i); err != nil {
			return row{}, err
		}
	}
	per := time.Since(start) / time.Duration(n)
	return row{name: fmt.Sprintf("floor: one leaf's file-system calls (3 stats, mkdir, a write, a rename), %d in a row", n),
		p50: fmt.Sprintf("%.3f ms", float64(per.Nanoseconds())/1e6), extra: "per task, one core", goal: "(goal per task: <= 0.25 ms in all)"}, nil
}
