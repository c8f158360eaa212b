package server

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// postBody POSTs body with a content type and decodes the envelope.
func (ts *testServer) postBody(t *testing.T, path, ctype string, body io.Reader) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, ts.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{Code: resp.StatusCode}
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("POST %s: not JSON: %s", path, b)
	}
	json.Unmarshal(a.Data, &a.run)
	return a
}

// Parameters as a JSON body (Airflow's --conf) give the same run as the query; every mistake is a
// 400 naming the parameter, and nothing runs with parameters the caller did not ask for.
func TestConfTriggers(t *testing.T) {
	ts := newTestServer(t)
	const hello = "/api/chains/testchains/hello_chain/HelloTask"
	const join = "/api/chains/testchains/fanin_chain/JoinTask"
	byQuery := ts.post(t, hello+"?name=ada&wait=20s")
	byBody := ts.postBody(t, hello+"?wait=20s", "application/json; charset=utf-8", strings.NewReader(`{"name": "ada"}`))
	if byBody.Code != http.StatusOK || byBody.run.Key != byQuery.run.Key {
		t.Fatalf("JSON body = %d key %s, query key %s: want the same run", byBody.Code, byBody.run.Key, byQuery.run.Key)
	}
	// Sent in chunks, its length unknown until it ends: read all the same.
	byChunks := ts.postBody(t, hello+"?wait=20s", "application/json", io.NopCloser(strings.NewReader(`{"name": "ada"}`)))
	if byChunks.Code != http.StatusOK || byChunks.run.Key != byQuery.run.Key {
		t.Fatalf("chunked JSON body = %d key %s, query key %s: want the same run", byChunks.Code, byChunks.run.Key, byQuery.run.Key)
	}
	tests := []struct {
		path, ctype, body string
		code              int
		want              string
	}{
		{join, "application/json", `{"leaves": "3"}`, 400, `parameter "leaves": "\"3\"" has the wrong JSON type: want a number`},
		{join, "application/json", `{"leaves": 2.5}`, 400, `parameter "leaves": "2.5" is not an integer`},
		{join, "application/json", `{"leaves": true}`, 400, `want a number`},
		{hello, "application/json", `{"name": 7}`, 400, `parameter "name": "7" has the wrong JSON type: want a string`},
		{hello, "application/json", `{"nmae": "x"}`, 400, `parameter "nmae": is not a parameter of HelloTask`},
		{hello + "?name=x", "application/json", `{"name": "y"}`, 400, `parameter "name": is given both in the query and in the JSON body`},
		{hello, "application/json", `{"name": "a", "name": "b"}`, 400, `parameter "name": is given twice in the JSON body`},
		{hello, "application/json", `{"name": "a", "n\u0061me": "a"}`, 400, `parameter "name": is given twice in the JSON body`},
		{hello, "application/json", `{"name": "a",}`, 400, `parameter "body": is not a JSON object of parameters`},
		{hello, "application/json", `{"name": "a"`, 400, `parameter "body": is not a JSON object of parameters`},
		{hello, "application/json", `null`, 400, `parameter "body": is not a JSON object of parameters`},
		{hello, "application/json", `[1, 2]`, 400, `parameter "body": is not a JSON object of parameters`},
		{hello, "application/json", `{"name": "a"} {"name": "b"}`, 400, `parameter "body": holds more than one JSON value`},
		{hello, "application/json", `{"wait": "10s"}`, 400, `parameter "wait": is not a parameter of HelloTask`},
		{hello, "text/plain", `name=ada`, 415, `a body of type "text/plain" is not read`},
		{"/api/chains/testchains/faults_chain/SleepTask", "application/json", `{"duration": 5}`, 400, `want a string such as "90s"`},
		// Query pairs Go's parser would drop: each a 400 naming the bad part.
		{hello + "?name=50%", "", "", 400, `parameter "name": "name=50%" has a '%' that starts no valid escape`},
		{hello + "?name=a;b", "", "", 400, `parameter "name": "name=a;b" contains ';'`},
		{hello + "?x=%zz", "", "", 400, `parameter "x": "x=%zz" has a '%'`},
	}
	for _, tt := range tests {
		var body io.Reader
		if tt.body != "" {
			body = strings.NewReader(tt.body)
		}
		a := ts.postBody(t, tt.path, tt.ctype, body)
		if a.Code != tt.code || !strings.Contains(a.Message, tt.want) {
			t.Errorf("POST %s %s = %d %q, want %d with %q", tt.path, tt.body, a.Code, a.Message, tt.code, tt.want)
		}
	}
	if n := ts.Runs().Launches(); n != 1 {
		t.Errorf("%d plugin launches, want 1 (only the valid run)", n)
	}
	// A chunked body over the limit is refused like a declared one.
	big := io.MultiReader(strings.NewReader(`{"name": "`), strings.NewReader(strings.Repeat("x", 2<<20)), strings.NewReader(`"}`))
	if a := ts.postBody(t, hello, "application/json", io.NopCloser(big)); a.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked 2 MB body = %d %q, want 413", a.Code, a.Message)
	}
}
