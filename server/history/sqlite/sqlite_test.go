package sqlite_test

import (
	"path/filepath"
	"testing"

	"nectar/server/history"
	"nectar/server/history/historytest"
	"nectar/server/history/sqlite"
)

func TestDriver(t *testing.T) {
	historytest.Run(t, func(t *testing.T) history.Driver {
		d, err := sqlite.Open(filepath.Join(t.TempDir(), "history.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	})
}
