package postgres_test

import (
	"context"
	"strings"
	"testing"

	"nectar/server/history"
	"nectar/server/history/historytest"
	"nectar/server/history/pgtest"
	"nectar/server/history/postgres"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestDriver(t *testing.T) {
	historytest.Run(t, func(t *testing.T) history.Driver {
		d, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}

// A URL whose password holds a raw "/" does not parse, and where its host begins cannot be
// told: it is named by its scheme alone.
func TestRedactNeverShowsAPassword(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"postgres://nectar:ab/s3cret-pw@db/nectar", "postgres://… (not a URL: percent-encode a password's reserved characters)"},
		{"postgres://nectar:s3cret-pw@db:notaport/nectar", "postgres://…@db:notaport/nectar"},
		{"postgres://db:notaport/nectar?password=s3cret-pw", "postgres://… (not a URL: percent-encode a password's reserved characters)"},
		{"postgres://db/nectar?user=n&password=s3cret-pw", "postgres://db/nectar?password=xxxxx&user=n"},
		{"postgres://n:s3cret-pw@db/nectar", "postgres://n:xxxxx@db/nectar"},
	} {
		if got := postgres.Redact(tc.url); got != tc.want || strings.Contains(got, "s3cret-pw") {
			t.Errorf("Redact(%s) = %s, want %s", tc.url, got, tc.want)
		}
	}
}

// A bad URL or an unreachable server is reported without the password.
func TestOpenErrorsHideThePassword(t *testing.T) {
	for _, url := range []string{
		"postgres://nectar:s3cret-pw@127.0.0.1:1/db?connect_timeout=2",
		"postgres://nectar:s3cret-pw@127.0.0.1:notaport/db",
		"postgres://127.0.0.1:1/db?user=nectar&password=s3cret-pw&connect_timeout=2", // pgx takes it there too
		"postgres://nectar:s3cret-pw@127.0.0.1:1/db?sslpassword=s3cret-pw&connect_timeout=2",
	} {
		d, err := postgres.Open(context.Background(), url)
		if err == nil {
			d.Close()
			t.Fatalf("Open(%s) succeeded", url)
		}
		if strings.Contains(err.Error(), "s3cret-pw") {
			t.Errorf("Open error shows the password: %v", err)
		}
		if !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("Open error does not name the server: %v", err)
		}
	}
}
