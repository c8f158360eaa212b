package local_test

import (
	"testing"
	"time"

	"nectar/targets/local"
	"nectar/targets/targettest"
)

func TestConformance(t *testing.T) {
	// The local store's URLs are served by the Nectar server; server tests download them.
	targettest.Download = nil
	s, err := local.New(t.TempDir(), func(key string, _ time.Duration) string { return "http://nectar.test/api/download/" + key })
	if err != nil {
		t.Fatal(err)
	}
	targettest.Run(t, s)
}

func TestLargePutStreamsWithBoundedMemory(t *testing.T) {
	s, err := local.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	targettest.LargePut(t, s, 96<<20)
	targettest.LargeCommit(t, s, 96<<20)
}
