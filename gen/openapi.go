package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"nectar/chains/params"
)

// openAPIFile is the generated OpenAPI 3.1 description of the API, served at
// GET /api/openapi.json. It is a Go file (a string constant) so that it carries the generated-code
// header and is checked for staleness like the rest.
const openAPIFile = "server/catalog/openapi_gen.go"

// obj is a JSON object; encoding/json writes its keys sorted, so the output is reproducible.
type obj = map[string]any

// openAPI describes every route: one operation per task (its parameters typed from the schema,
// as query parameters or a JSON body) and the API's own endpoints.
func openAPI(ctypes []ChainType) ([]byte, error) {
	paths := obj{}
	for _, ct := range ctypes {
		for _, t := range ct.Tasks {
			paths["/api/chains/"+t.Type+"/"+t.Chain+"/"+t.Name] = taskPath(t)
		}
	}
	for p, item := range fixedPaths() {
		paths[p] = item
	}
	doc := obj{
		"openapi": "3.1.0",
		"info": obj{
			"title":       "Nectar",
			"version":     "1",
			"description": "Every exported Task of chains/<type>/<name>_chain.go is POST /api/chains/<type>/<name>_chain/<Task>. Every JSON answer is {status, message, data}; status repeats the HTTP code.",
		},
		"paths":      paths,
		"components": components(),
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	// Backquotes occur only inside JSON strings, where \u0060 means the same: the document can
	// then sit in a raw Go string literal.
	spec := strings.ReplaceAll(buf.String(), "`", `\u0060`)
	var src bytes.Buffer
	src.WriteString(header + "\n\npackage catalog\n\n")
	src.WriteString("// OpenAPI is the OpenAPI 3.1 description of this build's API (GET /api/openapi.json).\n")
	src.WriteString("const OpenAPI = `" + spec + "`\n")
	return src.Bytes(), nil
}

// paramSchema is the JSON Schema of one parameter, with its default as a typed value.
func paramSchema(p Param) (obj, error) {
	s := obj{}
	switch p.Kind {
	case KindString:
		s["type"] = "string"
	case KindEnum:
		s["type"], s["enum"] = "string", p.Enum
	case KindBool:
		s["type"] = "boolean"
	case KindInt, KindInt64:
		s["type"], s["format"] = "integer", "int64"
	case KindFloat:
		s["type"] = "number"
	case KindTime:
		s["type"] = "string"
		s["description"] = "a date (2006-01-02, midnight UTC) or an RFC 3339 time"
	case KindDuration:
		s["type"] = "string"
		s["description"] = "a Go duration such as 90s or 1h30m"
		if !p.Signed {
			s["pattern"] = `^[0-9.]+(ns|us|µs|ms|s|m|h)([0-9.]+(ns|us|µs|ms|s|m|h))*$`
		}
	case KindStrings:
		s["type"], s["items"] = "array", obj{"type": "string"}
	}
	if p.Required {
		return s, nil
	}
	def, err := typedDefault(p)
	if err != nil {
		return nil, err
	}
	s["default"] = def
	return s, nil
}

func typedDefault(p Param) (any, error) {
	switch p.Kind {
	case KindBool:
		return strconv.ParseBool(p.Default)
	case KindInt, KindInt64:
		return strconv.ParseInt(p.Default, 10, 64)
	case KindFloat:
		return strconv.ParseFloat(p.Default, 64)
	case KindStrings:
		if p.Default == "" {
			return []string{}, nil
		}
		return strings.Split(p.Default, ","), nil
	case KindTime:
		t, err := params.ParseTime(p.Name, p.Default)
		return params.FormatTime(t), err
	case KindDuration:
		d, err := time.ParseDuration(p.Default)
		return d.String(), err
	}
	return p.Default, nil
}

func taskPath(t Task) obj {
	var qs []any
	props := obj{}
	var required []string
	for _, p := range t.Params {
		schema, err := paramSchema(p)
		if err != nil {
			schema = obj{"type": "string"}
		}
		q := obj{"name": p.Name, "in": "query", "required": false, "schema": schema}
		if p.Doc != "" {
			q["description"] = p.Doc
		}
		if p.Kind == KindStrings {
			q["style"], q["explode"] = "form", true
		}
		qs = append(qs, q)
		props[p.Name] = schema
		if p.Required {
			required = append(required, p.Name)
		}
	}
	runQuery := append(append([]any{}, qs...),
		obj{"name": "wait", "in": "query", "schema": obj{"type": "string", "description": "hold the answer until the run ends or this long (such as 10s)"}},
		obj{"name": "force", "in": "query", "schema": obj{"type": "boolean", "default": false, "description": "run the task even if its out exists"}},
	)
	body := obj{"type": "object", "properties": props, "additionalProperties": false}
	summary, doc := firstLine(t.Doc), t.Doc
	id := t.Type + "." + t.Chain + "." + t.Name
	requiredNote := ""
	if len(required) > 0 {
		requiredNote = " Required parameters (in the query or the body): " + strings.Join(required, ", ") + "."
	}
	return obj{
		"post": obj{
			"operationId": "run." + id, "tags": []string{t.Type + "/" + t.Chain}, "summary": summary,
			"description": strings.TrimSpace(doc + requiredNote),
			"parameters":  runQuery,
			"requestBody": obj{"required": false, "content": obj{"application/json": obj{"schema": body}}},
			"responses": obj{
				"200": ref("Run", "the run ended (wait) or its out already existed"),
				"202": ref("Run", "the run was started or joined; poll its status_url"),
				"400": ref("Error", "a parameter is wrong; the message names it"),
				"401": ref("Error", "a bearer token is needed"),
				"413": ref("Error", "the body is over 1 MB"),
				"415": ref("Error", "a body that is not JSON"),
				"429": ref("Error", "the run queue is full; retry after Retry-After"),
				"503": ref("Error", "the store is unavailable or the server is shutting down"),
			},
		},
		"delete": obj{
			"operationId": "cancel." + id, "tags": []string{t.Type + "/" + t.Chain}, "summary": "Cancel the run of these parameters",
			"parameters": qs,
			"responses": obj{
				"200": ref("Run", "the run was cancelled"),
				"202": ref("Run", "the run is being cancelled"),
				"400": ref("Error", "a parameter is wrong"),
				"401": ref("Error", "a bearer token is needed"),
				"404": ref("Error", "no run of these parameters is in progress"),
			},
		},
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

func ref(schema, description string) obj {
	return obj{"description": description, "content": obj{"application/json": obj{"schema": obj{"$ref": "#/components/schemas/" + schema}}}}
}

func query(name, typ, description string, required bool) obj {
	return obj{"name": name, "in": "query", "required": required, "schema": obj{"type": typ}, "description": description}
}

// fixedPaths are the API's own endpoints.
func fixedPaths() obj {
	signed := []any{
		query("expires", "string", "expiry of the signed URL (Unix seconds)", true),
		query("signature", "string", "HMAC-SHA256 signature of the URL", true),
	}
	errs := func(codes ...int) obj {
		o := obj{}
		for _, c := range codes {
			o[strconv.Itoa(c)] = ref("Error", fmt.Sprintf("HTTP %d", c))
		}
		return o
	}
	with := func(o obj, code int, r obj) obj { o[strconv.Itoa(code)] = r; return o }
	pathParam := func(name string) obj {
		return obj{"name": name, "in": "path", "required": true, "schema": obj{"type": "string"}}
	}
	taskPathParams := []any{pathParam("type"), pathParam("chain"), pathParam("task")}
	return obj{
		"/api/chains": obj{"get": obj{"operationId": "catalog.types", "summary": "Chain types and their chains", "responses": obj{"200": ref("Envelope", "the chain types")}}},
		"/api/chains/{type}": obj{"get": obj{"operationId": "catalog.chains", "summary": "The chains of a type",
			"parameters": []any{obj{"name": "type", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses":  with(errs(404), 200, ref("Envelope", "the chains"))}},
		"/api/chains/{type}/{chain}": obj{"get": obj{"operationId": "catalog.tasks", "summary": "The tasks of a chain, with their parameter schemas",
			"parameters": []any{obj{"name": "type", "in": "path", "required": true, "schema": obj{"type": "string"}}, obj{"name": "chain", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses":  with(errs(404), 200, ref("Envelope", "the tasks"))}},
		"/api/chainstatus": obj{
			"get": obj{"operationId": "runs.status", "summary": "The status of a run (the status_url a POST returned): its task counts and a page of its tasks (100, or up to 1,000 with tasks_limit), with a link to the next ones",
				"parameters": append([]any{query("chain", "string", "<key>/out", true),
					obj{"name": "tasks_from", "in": "query", "schema": obj{"type": "integer", "minimum": 0}, "description": "the position of the first task to list (tasks_next_url sets it)"},
					obj{"name": "tasks_limit", "in": "query", "schema": obj{"type": "integer", "minimum": 1, "maximum": 1000}, "description": "how many tasks to list (default 100, most 1000)"}}, signed...),
				"responses": with(errs(400, 403, 404, 503), 200, ref("Run", "the run's status"))},
			"delete": obj{"operationId": "runs.cancel", "summary": "Cancel the run of a status URL",
				"parameters": append([]any{query("chain", "string", "<key>/out", true)}, signed...),
				"responses":  with(errs(400, 401, 403, 404), 200, ref("Run", "the run was cancelled"))},
		},
		"/api/chainlog": obj{"get": obj{"operationId": "runs.log", "summary": "A task's log, readable while it runs",
			"parameters": append([]any{query("task", "string", "the task's key", true), query("offset", "integer", "skip this many bytes", false),
				query("follow", "boolean", "stream until the task ends", false)}, signed...),
			"responses": with(errs(400, 403, 404), 200, obj{"description": "the log", "content": obj{"text/plain": obj{"schema": obj{"type": "string"}}}})}},
		"/api/runs": obj{"get": obj{"operationId": "history.list", "summary": "The run history, newest first",
			"parameters": []any{query("type", "string", "", false), query("chain", "string", "", false), query("task", "string", "", false),
				obj{"name": "status", "in": "query", "schema": obj{"type": "string", "enum": []string{"PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED"}}},
				obj{"name": "trigger", "in": "query", "schema": obj{"type": "string", "enum": []string{"api", "cli", "ui", "schedule", "backfill"}}},
				query("key", "string", "", false), query("since", "string", "submitted at or after (date or RFC 3339)", false),
				query("until", "string", "submitted before (date or RFC 3339)", false), query("q", "string", "a substring of a parameter value", false),
				obj{"name": "limit", "in": "query", "schema": obj{"type": "integer", "minimum": 1, "maximum": 500, "default": 50}},
				query("cursor", "string", "next_cursor of the page before", false), query("counts", "boolean", "add the counts per status", false)},
			"responses": with(errs(400, 404, 503), 200, ref("Envelope", "a page of runs"))}},
		"/api/runs/{run_id}": obj{"get": obj{"operationId": "history.get", "summary": "One run of the history",
			"parameters": []any{obj{"name": "run_id", "in": "path", "required": true, "schema": obj{"type": "string"}}},
			"responses":  with(errs(404, 503), 200, ref("Envelope", "the run"))}},
		"/api/schedules": obj{"get": obj{"operationId": "schedules.list", "summary": "Every schedule: expression, next fire times, last interval fired, paused or not",
			"responses": with(errs(503), 200, ref("Envelope", "the schedules"))}},
		"/api/schedules/{type}/{chain}/{task}": obj{"get": obj{"operationId": "schedules.get", "summary": "One schedule",
			"parameters": taskPathParams, "responses": with(errs(404, 503), 200, ref("Envelope", "the schedule"))}},
		"/api/schedules/{type}/{chain}/{task}/pause": obj{"post": obj{"operationId": "schedules.pause", "summary": "Pause a schedule on every server sharing the store",
			"parameters": taskPathParams, "responses": with(errs(401, 404, 503), 200, ref("Envelope", "the schedule, paused"))}},
		"/api/schedules/{type}/{chain}/{task}/resume": obj{"post": obj{"operationId": "schedules.resume", "summary": "Resume a paused schedule",
			"parameters": taskPathParams, "responses": with(errs(401, 404, 503), 200, ref("Envelope", "the schedule, resumed"))}},
		"/api/schedules/{type}/{chain}/{task}/backfill": obj{"post": obj{"operationId": "schedules.backfill",
			"summary": "Run every complete interval whose start is within [from, to], oldest first",
			"parameters": append(append([]any{}, taskPathParams...),
				query("from", "string", "the earliest interval start (date or RFC 3339)", true),
				query("to", "string", "the latest interval start (date or RFC 3339)", true),
				obj{"name": "force", "in": "query", "schema": obj{"type": "boolean", "default": false, "description": "run intervals whose out exists again"}}),
			"responses": with(errs(400, 401, 404, 503), 202, ref("Envelope", "the intervals, their keys and status URLs"))},
			"delete": obj{"operationId": "schedules.stopBackfills",
				"summary":    "Stop the schedule's backfills on every server sharing the store: no more of their intervals start (runs already started go on)",
				"parameters": taskPathParams, "responses": with(errs(401, 404, 503), 200, ref("Envelope", "how many intervals this server had not started"))}},
		"/api/openapi.json": obj{"get": obj{"operationId": "openapi", "summary": "This document",
			"responses": obj{"200": obj{"description": "the OpenAPI document", "content": obj{"application/json": obj{"schema": obj{"type": "object"}}}}}}},
		"/healthz": obj{"get": obj{"operationId": "health", "summary": "200 when serving", "responses": obj{"200": ref("Envelope", "serving")}}},
	}
}

func components() obj {
	status := obj{"type": []string{"string", "null"}, "enum": []any{"PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED", "UPSTREAM_FAILED", nil}}
	return obj{
		"schemas": obj{
			"Envelope": obj{"type": "object", "required": []string{"status", "message", "data"},
				"properties": obj{"status": obj{"type": "integer"}, "message": obj{"type": "string"}, "data": obj{}}},
			"Error": obj{"type": "object", "required": []string{"status", "message", "data"},
				"properties": obj{"status": obj{"type": "integer", "minimum": 400}, "message": obj{"type": "string"},
					"data": obj{"type": "object", "properties": obj{"request_id": obj{"type": "string"}}}}},
			"Run": obj{"type": "object", "required": []string{"status", "message", "data"},
				"properties": obj{"status": obj{"type": "integer"}, "message": obj{"type": "string"},
					"data": obj{"type": "object", "required": []string{"key", "job_status"},
						"properties": obj{
							"key": obj{"type": "string"}, "job_status": status, "type": obj{"type": "string"}, "chain": obj{"type": "string"},
							"task": obj{"type": "string"}, "params": obj{"type": "object"}, "error": obj{"type": []string{"string", "null"}},
							"status_url": obj{"type": "string"}, "resource_url": obj{"type": "string"}, "log_url": obj{"type": "string"},
							"params_url": obj{"type": "string"}, "expires_in": obj{"type": "integer"},
							"submitted_at": obj{"type": "string", "format": "date-time"}, "started_at": obj{"type": "string", "format": "date-time"},
							"finished_at": obj{"type": "string", "format": "date-time"}, "tasks": obj{"type": "array", "items": obj{"type": "object"}},
							"task_counts": obj{"type": "object"}, "tasks_from": obj{"type": "integer"}, "tasks_next_url": obj{"type": "string"},
							"failed_tasks": obj{"type": "array", "items": obj{"type": "object"}}, "running_tasks": obj{"type": "array", "items": obj{"type": "object"}},
							"metrics": obj{"type": "object"}, "metrics_url": obj{"type": "string"},
						}}}},
		},
	}
}
