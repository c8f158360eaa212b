package plugins

import (
	"encoding/json"
	"slices"
	"testing"
)

// A task's inputs are paths, or (a local store) keys under InputRoot, each holding its input
// as InputName; either way the plugin reads the same files, and the request, sent as JSON,
// says the same after the trip.
func TestInputPathsAreTheFilesATaskReads(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  RunTaskRequest
		want []string
	}{
		{name: "no inputs", req: RunTaskRequest{}, want: nil},
		{name: "paths (a remote store's downloads)", req: RunTaskRequest{Inputs: []string{"/spool/r1-3-input-0", "/spool/r1-3-input-1"}},
			want: []string{"/spool/r1-3-input-0", "/spool/r1-3-input-1"}},
		{name: "keys under a local store", req: RunTaskRequest{InputRoot: "/data/targets", InputName: "out",
			Inputs: []string{"chains/t/c_chain/LeafTask/0a1b", "chains/t/c_chain/LeafTask/2c3d"}},
			want: []string{"/data/targets/chains/t/c_chain/LeafTask/0a1b/out", "/data/targets/chains/t/c_chain/LeafTask/2c3d/out"}},
		{name: "a root without a trailing slash or with one", req: RunTaskRequest{InputRoot: "/data/targets/", InputName: "out", Inputs: []string{"k"}},
			want: []string{"/data/targets/k/out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.req.InputPaths(); !slices.Equal(got, tc.want) {
				t.Errorf("InputPaths() = %q; want %q", got, tc.want)
			}
			b, err := jsonCodec{}.Marshal(&tc.req)
			if err != nil {
				t.Fatal(err)
			}
			var back RunTaskRequest
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if got := back.InputPaths(); !slices.Equal(got, tc.want) {
				t.Errorf("after the trip, InputPaths() = %q; want %q", got, tc.want)
			}
		})
	}
}
