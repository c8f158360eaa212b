package server

import (
	"log/slog"
	"strings"
	"testing"

	"nectar/server/catalog"
)

func TestConfigMetricsPublic(t *testing.T) {
	token := strings.Repeat("t", 24)
	tests := []struct {
		env     map[string]string
		public  bool
		wantErr string
	}{
		{map[string]string{}, true, ""},
		{map[string]string{"NECTAR_METRICS_PUBLIC": "true"}, true, ""},
		{map[string]string{"NECTAR_METRICS_PUBLIC": "false", "NECTAR_API_TOKENS": token}, false, ""},
		{map[string]string{"NECTAR_METRICS_PUBLIC": "maybe"}, true, `NECTAR_METRICS_PUBLIC="maybe": want true or false`},
		{map[string]string{"NECTAR_METRICS_PUBLIC": "false"}, true, `NECTAR_METRICS_PUBLIC="false": false puts /metrics behind the bearer tokens, but NECTAR_API_TOKENS is not set`},
	}
	for _, tt := range tests {
		cfg, err := ConfigFromEnv(func(k string) string { return tt.env[k] })
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("ConfigFromEnv(%v) = %v", tt.env, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("ConfigFromEnv(%v) = %v, want %q", tt.env, err, tt.wantErr)
		case err == nil && cfg.MetricsPublic != tt.public:
			t.Errorf("ConfigFromEnv(%v).MetricsPublic = %v, want %v", tt.env, cfg.MetricsPublic, tt.public)
		}
	}
	// The same mistake in a Config built in code: New refuses it rather than open /metrics.
	cfg := Defaults()
	cfg.Target, cfg.PluginDir, cfg.MetricsPublic = t.TempDir(), pluginDir, false
	if _, err := New(cfg, catalog.Generated(), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "NECTAR_API_TOKENS is not set") {
		t.Errorf("New with private metrics and no token = %v, want an error", err)
	}
}

// NECTAR_STORE_TIMEOUT is read where the store is opened, and checked with the other settings:
// every mistake is said at once.
func TestConfigChecksTheStoreTimeout(t *testing.T) {
	env := map[string]string{"NECTAR_STORE_TIMEOUT": "forever", "NECTAR_MAX_WAIT": "2h"}
	_, err := ConfigFromEnv(func(k string) string { return env[k] })
	if err == nil || !strings.Contains(err.Error(), `NECTAR_STORE_TIMEOUT="forever": want a duration from 1s to 10m`) || !strings.Contains(err.Error(), "NECTAR_MAX_WAIT") {
		t.Errorf("err = %v, want both NECTAR_STORE_TIMEOUT and NECTAR_MAX_WAIT named", err)
	}
	for _, ok := range []string{"", "30s", "45"} {
		env := map[string]string{"NECTAR_STORE_TIMEOUT": ok}
		if _, err := ConfigFromEnv(func(k string) string { return env[k] }); err != nil {
			t.Errorf("NECTAR_STORE_TIMEOUT=%q: %v", ok, err)
		}
	}
}

// A secret in a URL the configuration names is never in the error that refuses it: not when
// the URL does not parse (a password with a raw "/", whose parser error quotes it), not in a
// query parameter.
func TestConfigErrorsNeverShowASecret(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"NECTAR_NATS_URL", "nats://nectar:ab/Sup3r-secret@127.0.0.1:4222", "NECTAR_NATS_URL: URL 1 is not a URL"},
		{"NECTAR_NATS_URL", "nats://127.0.0.1:4222,nats://u:Sup3r/secret@h:4222", "NECTAR_NATS_URL: URL 2 is not a URL"},
		{"NECTAR_NATS_URL", "http://u:Sup3r-secret@h:4222", `scheme "http"`},
		{"NECTAR_DATABASE_URL", "mysql://u:Sup3r-secret@h/db", `scheme "mysql"`},
	} {
		env := map[string]string{tc.name: tc.value}
		_, err := ConfigFromEnv(func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "Sup3r") {
			t.Errorf("%s=%s: err = %v, want %q without the secret", tc.name, tc.value, err, tc.want)
		}
	}
}
