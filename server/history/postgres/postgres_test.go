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

// A bad URL or an unreachable server is reported without the password.
func TestOpenErrorsHideThePassword(t *testing.T) {
	for _, url := range []string{
		"postgres://nectar:s3cret-pw@127.0.0.1:1/db?connect_timeout=2",
		"postgres://nectar:s3cret-pw@127.0.0.1:notaport/db",
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
