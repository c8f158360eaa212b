package ui

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"net/url"
	"sort"
	"strings"
	"time"

	"nectar/server/history"
)

var funcs = template.FuncMap{
	"lower":      func(s any) string { return strings.ToLower(fmt.Sprint(s)) },
	"maxDrawn":   func() int { return MaxDrawn },
	"add":        func(a, b int) int { return a + b },
	"clip":       clipText,
	"iso":        func(t any) string { return timeOf(t).UTC().Format(time.RFC3339) },
	"abs":        func(t any) string { return timeOf(t).UTC().Format("2006-01-02 15:04:05 MST") },
	"inzone":     inZone,
	"rel":        func(t any) string { return relative(timeOf(t), time.Now()) },
	"ms":         durationText,
	"cost":       costText,
	"params":     paramsText,
	"taskcounts": countsText,
	"percent":    func(f float64) string { return fmt.Sprintf("%.0f%%", f*100) },
	"mib":        func(b uint64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) },
	"nodeLink": func(runID string, n Node) template.URL {
		return template.URL("/runs/" + url.PathEscape(runID) + "?task=" + fmt.Sprint(n.Tasks[0]) + "#task-detail")
	},
}

func timeOf(t any) time.Time {
	switch v := t.(type) {
	case time.Time:
		return v
	case *time.Time:
		if v != nil {
			return *v
		}
	}
	return time.Time{}
}

// relative is "12s ago", "3 min ago", "5 h ago", "2 d ago".
func relative(t, now time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d d ago", int(d.Hours()/24))
}

func durationText(ms int64, status string) string {
	if ms == 0 && (status == history.StatusRunning || status == history.StatusPending) {
		return "running"
	}
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", ms)
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// costText shows a cost with two significant digits in plain decimals ($0.0000012, $0.37):
// runs cost fractions of a cent, and an exponent reads badly in a table.
func costText(usd float64) string {
	if usd <= 0 || math.IsNaN(usd) || math.IsInf(usd, 0) {
		return "–"
	}
	decimals := max(2, int(-math.Floor(math.Log10(usd)))+1)
	return fmt.Sprintf("$%.*f", min(decimals, 12), usd)
}

// paramsText shows canonical parameter JSON as name=value pairs.
func paramsText(canon string) string {
	var m map[string]any
	if json.Unmarshal([]byte(canon), &m) != nil {
		return canon
	}
	if len(m) == 0 {
		return "–"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + valueText(m[k])
	}
	return strings.Join(parts, " ")
}

func valueText(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = valueText(e)
		}
		return strings.Join(s, ",")
	case float64:
		b, _ := json.Marshal(x)
		return string(b)
	}
	return fmt.Sprint(v)
}

// paramsQuery turns canonical parameter JSON back into a query (for rerun, curl and nectar run).
func paramsQuery(canon string) url.Values {
	var m map[string]any
	q := url.Values{}
	if json.Unmarshal([]byte(canon), &m) != nil {
		return q
	}
	for k, v := range m {
		q.Set(k, valueText(v))
	}
	return q
}

func countsText(c history.TaskCounts) string {
	if c.Total == 0 {
		return "–"
	}
	parts := []string{fmt.Sprintf("%d/%d done", c.Done, c.Total)}
	if c.Cached > 0 {
		parts = append(parts, fmt.Sprintf("%d cached", c.Cached))
	}
	if c.Running > 0 {
		parts = append(parts, fmt.Sprintf("%d running", c.Running))
	}
	if c.Failed+c.UpstreamFailed > 0 {
		parts = append(parts, fmt.Sprintf("%d failed", c.Failed+c.UpstreamFailed))
	}
	return strings.Join(parts, " · ")
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// inZone shows a time in a schedule's time zone (its fire times are read there), UTC if the
// zone is unknown.
func inZone(t any, zone string) string {
	loc, err := time.LoadLocation(zone)
	if err != nil {
		loc = time.UTC
	}
	return timeOf(t).In(loc).Format("2006-01-02 15:04:05 MST")
}
