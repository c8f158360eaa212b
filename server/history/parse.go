package history

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"nectar/chains/params"
)

// QueryNames are the query parameters of GET /api/runs.
var QueryNames = []string{"type", "chain", "task", "status", "trigger", "key", "since", "until", "q", "limit", "cursor", "counts"}

// ParseQuery reads the filters, page size and cursor of GET /api/runs (and of the UI's runs
// page); every error is a *params.Error naming the parameter.
func ParseQuery(q url.Values) (p ListParams, withCounts bool, err error) {
	for name := range q {
		if !slices.Contains(QueryNames, name) {
			return p, false, &params.Error{Param: name, Reason: "is not a filter of /api/runs (it takes: type, chain, task, status, trigger, key, since, until, q, limit, cursor, counts)"}
		}
	}
	get := func(name string) (string, error) { return params.QueryValue(q, name, "", false) }
	fields := []struct {
		name string
		dst  *string
	}{{"type", &p.Type}, {"chain", &p.Chain}, {"task", &p.Task}, {"status", &p.Status}, {"trigger", &p.Trigger}, {"key", &p.Key}, {"q", &p.Query}}
	for _, f := range fields {
		if *f.dst, err = get(f.name); err != nil {
			return p, false, err
		}
		if !Text(*f.dst) {
			return p, false, &params.Error{Param: f.name, Value: *f.dst, Reason: "is not text (it holds a NUL byte or invalid UTF-8)"}
		}
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"since", &p.Since}, {"until", &p.Until}} {
		v, err := get(t.name)
		if err != nil {
			return p, false, err
		}
		if v != "" {
			if *t.dst, err = params.ParseTime(t.name, v); err != nil {
				return p, false, err
			}
		}
	}
	if p.Status != "" {
		if _, err := params.ParseEnum("status", p.Status, Statuses); err != nil {
			return p, false, err
		}
	}
	if p.Trigger != "" {
		if _, err := params.ParseEnum("trigger", p.Trigger, Triggers); err != nil {
			return p, false, err
		}
	}
	if !p.Since.IsZero() && !p.Until.IsZero() && !p.Since.Before(p.Until) {
		return p, false, &params.Error{Param: "since", Value: q.Get("since"), Reason: "must be before until"}
	}
	limit, err := params.QueryInt(q, "limit", strconv.Itoa(DefaultLimit), false)
	if err != nil {
		return p, false, err
	}
	if limit < 1 || limit > MaxLimit {
		return p, false, &params.Error{Param: "limit", Value: q.Get("limit"), Reason: fmt.Sprintf("must be between 1 and %d", MaxLimit)}
	}
	p.Limit = int(limit)
	if v, err := get("cursor"); err != nil {
		return p, false, err
	} else if v != "" {
		if p.Cursor, err = DecodeCursor(v); err != nil {
			return p, false, &params.Error{Param: "cursor", Value: v, Reason: "is not a cursor from a previous page (use next_cursor as given)"}
		}
	}
	withCounts, err = params.QueryBool(q, "counts", "false", false)
	return p, withCounts, err
}
