package catalog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"nectar/chains/params"
)

// ParseRawQuery parses a raw query strictly. Go's url.Query drops what it cannot parse (a bad
// escape such as ?name=50%, a ';' separator), and the task would then run with its defaults:
// parameters the caller did not ask for. Here any such pair is an error naming it.
func ParseRawQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err == nil {
		return q, nil
	}
	// Name the first pair that failed, as sent.
	for _, pair := range strings.FieldsFunc(raw, func(r rune) bool { return r == '&' }) {
		if _, perr := url.ParseQuery(pair); perr != nil {
			name, _, _ := strings.Cut(pair, "=")
			if n, uerr := url.QueryUnescape(name); uerr == nil {
				name = n
			}
			why := "is not valid query syntax"
			if strings.Contains(pair, ";") {
				why = "contains ';', which is not a separator here: escape it as %3B"
			} else if strings.Contains(pair, "%") {
				why = "has a '%' that starts no valid escape: write a literal % as %25"
			}
			if !utf8.ValidString(name) {
				name = strconv.Quote(name)
			}
			return nil, &params.Error{Param: name, Value: pair, Reason: why}
		}
	}
	return nil, &params.Error{Param: "query", Reason: "is not valid query syntax"}
}

// ParseJSONBody turns a JSON object of parameters into query values, checking each value's
// JSON type against the parameter's: a string for an int is an error naming the parameter. A
// name given both here and in query is an error too (which one was meant?).
func (t *Task) ParseJSONBody(body []byte, query url.Values) (url.Values, error) {
	notObject := &params.Error{Param: "body", Reason: "is not a JSON object of parameters, such as {\"name\": \"ada\"}"}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject
	}
	// Read name by name: a map would keep the last of a name given twice, running what
	// nobody may have meant (a repeated query parameter is refused too).
	obj := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		name, ok := tok.(string)
		var raw json.RawMessage
		if err != nil || !ok || dec.Decode(&raw) != nil {
			return nil, notObject
		}
		if _, twice := obj[name]; twice {
			return nil, &params.Error{Param: name, Reason: "is given twice in the JSON body; give it once"}
		}
		obj[name] = raw
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, notObject
	}
	if dec.More() {
		return nil, &params.Error{Param: "body", Reason: "holds more than one JSON value"}
	}
	out := url.Values{}
	for name, raw := range obj {
		p, ok := t.param(name)
		if !ok {
			return nil, &params.Error{Param: name, Reason: fmt.Sprintf("is not a parameter of %s (it takes: %s)", t.Name, strings.Join(t.ParamNames(), ", "))}
		}
		if _, both := query[name]; both {
			return nil, &params.Error{Param: name, Reason: "is given both in the query and in the JSON body; give it once"}
		}
		vals, err := jsonValues(p, raw)
		if err != nil {
			return nil, err
		}
		out[name] = vals
	}
	return out, nil
}

func (t *Task) param(name string) (Param, bool) {
	for _, p := range t.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}

// jsonValues is the query text of one JSON value, after checking its JSON type.
func jsonValues(p Param, raw json.RawMessage) ([]string, error) {
	wrong := func(want string) error {
		return &params.Error{Param: p.Name, Value: clipJSON(raw), Reason: "has the wrong JSON type: want " + want}
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, wrong("a JSON value")
	}
	switch p.Kind {
	case "int", "int64", "float64":
		n, ok := v.(json.Number)
		if !ok {
			return nil, wrong("a number")
		}
		return []string{n.String()}, nil
	case "bool":
		b, ok := v.(bool)
		if !ok {
			return nil, wrong("true or false")
		}
		return []string{strconv.FormatBool(b)}, nil
	case "[]string":
		list, ok := v.([]any)
		if !ok {
			return nil, wrong("an array of strings")
		}
		out := make([]string, 0, len(list))
		for _, e := range list {
			s, ok := e.(string)
			if !ok {
				return nil, wrong("an array of strings")
			}
			if strings.Contains(s, ",") {
				// The query form splits on commas; a comma inside an element would become two.
				return nil, &params.Error{Param: p.Name, Value: s, Reason: "holds a comma, which separates list elements"}
			}
			out = append(out, s)
		}
		if len(out) == 0 {
			return []string{""}, nil
		}
		return []string{strings.Join(out, ",")}, nil
	default: // string, enum, time, duration: JSON strings
		s, ok := v.(string)
		if !ok {
			switch p.Kind {
			case "time":
				return nil, wrong("a string: a date (2006-01-02) or an RFC 3339 time")
			case "duration":
				return nil, wrong(`a string such as "90s"`)
			}
			return nil, wrong("a string")
		}
		return []string{s}, nil
	}
}

func clipJSON(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}
