package history

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingDriver counts the runs as a database would, costing cost on the test's clock, and
// says how often it was asked. gate, when set, holds every count until it is closed.
type countingDriver struct {
	Driver
	clock *fakeClock
	cost  time.Duration
	asked atomic.Int64
	gate  chan struct{}
	fail  atomic.Bool
}

func (d *countingDriver) CountByStatus(ctx context.Context, f Filter) (map[string]int64, error) {
	n := d.asked.Add(1)
	if d.gate != nil {
		<-d.gate
	}
	d.clock.advance(d.cost)
	if d.fail.Load() {
		return nil, errors.New("the database went away")
	}
	return map[string]int64{"DONE": n}, nil
}

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// The runs page's counts are reused for 20 times what they cost, whatever the status filter
// (they are by status), per filter, and readers asking at once share one count; a failed
// count is not kept; the filters kept are bounded.
func TestCountsAreReusedForTwentyTimesTheirCost(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	d := &countingDriver{clock: clock, cost: 100 * time.Millisecond}
	c := &counts{now: clock.Now}
	get := func(f Filter) int64 {
		t.Helper()
		m, err := c.get(ctx, d, f)
		if err != nil {
			t.Fatal(err)
		}
		return m["DONE"]
	}
	all := Filter{}
	for _, tc := range []struct {
		name  string
		f     Filter
		after time.Duration // on the clock, before the read
		want  int64         // the count it answers (the number of the driver's count)
	}{
		{name: "first read counts", f: all, want: 1},
		{name: "a read 1 s later reuses it", f: all, after: time.Second, want: 1},
		{name: "so does one for a status (counts are by status)", f: Filter{Status: "FAILED"}, want: 1},
		{name: "another filter counts", f: Filter{Task: "HelloTask"}, want: 2},
		{name: "past 20 times its 100 ms, the first counts again", f: all, after: time.Second, want: 3},
	} {
		clock.advance(tc.after)
		if got := get(tc.f); got != tc.want {
			t.Fatalf("%s: answered count #%d; want #%d", tc.name, got, tc.want)
		}
	}

	// Sixteen readers at once: one count.
	d.gate = make(chan struct{})
	clock.advance(time.Minute)
	before := d.asked.Load()
	var wg sync.WaitGroup
	got := make([]int64, 16)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i] = get(all) }()
	}
	for d.asked.Load() == before {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // the others are waiting on it
	close(d.gate)
	wg.Wait()
	d.gate = nil
	for _, g := range got {
		if g != before+1 {
			t.Fatalf("sixteen readers at once got counts %v; want all #%d", got, before+1)
		}
	}
	if n := d.asked.Load(); n != before+1 {
		t.Fatalf("sixteen readers at once counted %d times; want once", n-before)
	}

	// A failed count is not kept: the next read counts.
	clock.advance(time.Minute)
	d.fail.Store(true)
	if _, err := c.get(ctx, d, all); err == nil {
		t.Fatal("a failed count answered no error")
	}
	d.fail.Store(false)
	before = d.asked.Load()
	if got := get(all); got != before+1 {
		t.Fatalf("after a failed count, a read answered count #%d; want a new one, #%d", got, before+1)
	}

	// Many filters: at most maxCountFilters kept.
	for i := range 3 * maxCountFilters {
		get(Filter{Query: string(rune('a' + i%26)), Key: string(rune('A' + i/26))})
	}
	if n := len(c.entries); n > maxCountFilters {
		t.Fatalf("%d filters kept; want at most %d", n, maxCountFilters)
	}
}
