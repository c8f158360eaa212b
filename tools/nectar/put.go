package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"nectar/server"
	"nectar/targets/open"
)

// put stores a local file in the configured store (NECTAR_TARGET) at a path, for the source data
// tasks read with ctx.Source: `nectar put flights.parquet datasets/flights/flights-3m.parquet`.
func put(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	if len(args) != 2 {
		return usageError("usage: nectar put <local file> <path in the store> (such as datasets/flights/airports.csv)")
	}
	file, path := args[0], args[1]
	if err := server.CheckDataPath(path); err != nil {
		return usageError("path %q: %v", path, err)
	}
	cfg, err := server.ConfigFromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	store, err := open.Target(ctx, cfg.Target, cfg.Getenv, nil)
	if err != nil {
		return fmt.Errorf("NECTAR_TARGET: %w", err)
	}
	f, err := os.Open(file)
	if err != nil {
		return usageError("%v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := store.Put(ctx, path, f); err != nil {
		return fmt.Errorf("storing %s at %s: %w", file, path, err)
	}
	fmt.Fprintf(stdout, "nectar: put %s (%d bytes) at %s in %s\n", file, fi.Size(), path, store)
	return nil
}
