package server

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"nectar/server/catalog"
)

// The generated OpenAPI document is valid OpenAPI 3.1 (kin-openapi), names every task with its
// parameters, and real requests and answers of the server conform to it.
func TestOpenAPI(t *testing.T) {
	ts := newTestServer(t)
	resp, err := http.Get(ts.url + "/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	spec, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET /api/openapi.json = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ctx := context.Background()
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(spec)
	if err != nil {
		t.Fatalf("loading the document: %v", err)
	}
	if err := doc.Validate(ctx); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q", doc.OpenAPI)
	}
	for _, task := range catalog.Generated().Tasks() {
		item := doc.Paths.Find("/api/chains/" + task.Type + "/" + task.Chain + "/" + task.Name)
		if item == nil || item.Post == nil || item.Delete == nil {
			t.Errorf("no POST and DELETE for %s/%s/%s", task.Type, task.Chain, task.Name)
			continue
		}
		for _, p := range task.Params {
			if item.Post.Parameters.GetByInAndName("query", p.Name) == nil {
				t.Errorf("%s: parameter %s is not described", task.Name, p.Name)
			}
		}
	}

	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip := func(method, path, ctype string, body []byte, wantCode int) {
		t.Helper()
		req, _ := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		route, pathParams, err := router.FindRoute(req)
		if err != nil {
			t.Fatalf("%s %s: no operation in the document: %v", method, path, err)
		}
		// The validator would write defaults into the request: the server must see what was sent.
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route,
			Options: &openapi3filter.Options{SkipSettingDefaults: true}}
		if err := openapi3filter.ValidateRequest(ctx, in); err != nil && wantCode < 400 {
			t.Fatalf("%s %s: request does not conform: %v", method, path, err)
		} else if err == nil && wantCode == 400 {
			t.Errorf("%s %s: the document accepts a request the server refuses", method, path)
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantCode {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, got, wantCode)
		}
		out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header}
		out.SetBodyBytes(got)
		if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
			t.Errorf("%s %s: answer does not conform: %v\n%s", method, path, err, got)
		}
	}
	roundTrip(http.MethodPost, "/api/chains/testchains/hello_chain/HelloTask?name=ada&wait=20s", "", nil, 200)
	roundTrip(http.MethodPost, "/api/chains/testchains/hello_chain/UpperTask?wait=20s", "application/json", []byte(`{"name":"grace"}`), 200)
	roundTrip(http.MethodPost, "/api/chains/testchains/fanin_chain/JoinTask?leaves=2.5", "", nil, 400)
	roundTrip(http.MethodGet, "/api/chains/testchains/hello_chain", "", nil, 200)
	ts.flushHistory(t)
	roundTrip(http.MethodGet, "/api/runs?limit=5&counts=true", "", nil, 200)
	roundTrip(http.MethodGet, "/api/schedules", "", nil, 200)
	roundTrip(http.MethodPost, "/api/schedules/testchains/hello_chain/DailyTask/pause", "", nil, 200)
	roundTrip(http.MethodGet, "/api/schedules/testchains/hello_chain/DailyTask", "", nil, 200)
	roundTrip(http.MethodPost, "/api/schedules/testchains/hello_chain/DailyTask/backfill?from=2026-01-01&to=2026-01-02", "", nil, 202)
	roundTrip(http.MethodPost, "/api/schedules/testchains/hello_chain/DailyTask/resume", "", nil, 200)
	// A request outside the document is refused by the validator, as a client generated from it
	// would never send it.
	req, _ := http.NewRequest(http.MethodPost, ts.url+"/api/chains/testchains/fanin_chain/JoinTask?leaves=many", nil)
	route, pp, _ := router.FindRoute(req)
	if err := openapi3filter.ValidateRequest(ctx, &openapi3filter.RequestValidationInput{Request: req, PathParams: pp, Route: route}); err == nil {
		t.Errorf("leaves=many passed the document's validation")
	}
}
