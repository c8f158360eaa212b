package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Misconfiguration stops the server at start with every problem named.
func TestServeRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want []string
	}{
		{map[string]string{"NECTAR_ADDR": "nowhere", "NECTAR_URL_EXPIRY": "8d", "NECTAR_MAX_RUNS": "0"},
			[]string{`NECTAR_ADDR="nowhere": want host:port`, `NECTAR_URL_EXPIRY="8d"`, `NECTAR_MAX_RUNS="0"`}},
		{map[string]string{"NECTAR_SIGNING_KEY": "short-secret"}, []string{"NECTAR_SIGNING_KEY: want at least 32 random bytes"}},
		{map[string]string{"NECTAR_TARGET": "gs://bucket"}, []string{`unknown target scheme "gs"`}},
		{map[string]string{"NECTAR_TARGET": t.TempDir(), "NECTAR_PLUGIN_DIR": "/no/such/dir"}, []string{"NECTAR_PLUGIN_DIR", "/no/such/dir", "make build"}},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), []string{"serve"}, func(k string) string { return tt.env[k] }, &stdout, &stderr)
		if err == nil {
			t.Errorf("serve with %v started", tt.env)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("serve with %v: error %q lacks %q", tt.env, err, w)
			}
		}
		if strings.Contains(err.Error(), "short-secret") {
			t.Errorf("the error shows the secret: %q", err)
		}
	}
}

func TestUnknownCommand(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"launch"}, func(string) string { return "" }, &out, &out); err == nil || !strings.Contains(out.String(), "usage: nectar") {
		t.Errorf("run(launch) = %v, output %q", err, out.String())
	}
}
