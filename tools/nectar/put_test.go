package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// nectar put stores a file where ctx.Source finds it, and refuses the server's own areas.
func TestPutStoresSourceData(t *testing.T) {
	target := t.TempDir()
	src := filepath.Join(t.TempDir(), "airports.csv")
	if err := os.WriteFile(src, []byte("iata,name\nATL,Hartsfield-Jackson\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"NECTAR_TARGET": target}
	getenv := func(k string) string { return env[k] }
	var out strings.Builder
	if err := run(context.Background(), []string{"put", src, "datasets/flights/airports.csv"}, getenv, &out, &out); err != nil {
		t.Fatalf("nectar put: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(target, "datasets", "flights", "airports.csv"))
	if err != nil || string(got) != "iata,name\nATL,Hartsfield-Jackson\n" {
		t.Errorf("stored %q, %v", got, err)
	}
	for _, tc := range []struct{ path, says string }{
		{"chains/x/y_chain/ZTask/out", "the server's own"},
		{"schedules/a/b/C/paused", "the server's own"},
		{".signing-key", "starting with '.'"},
		{"../escape", "not a clean relative path"},
	} {
		err := run(context.Background(), []string{"put", src, tc.path}, getenv, &out, &out)
		if err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("nectar put to %s = %v, want an error saying %q", tc.path, err, tc.says)
		}
	}
	if err := run(context.Background(), []string{"put", filepath.Join(t.TempDir(), "missing.csv"), "datasets/x.csv"}, getenv, &out, &out); err == nil || !strings.Contains(err.Error(), "missing.csv") {
		t.Errorf("nectar put of a missing file = %v", err)
	}
}
