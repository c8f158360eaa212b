package plugins

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// A graph answer says its size first, and the server decodes its nodes into one slice of that
// size (no outgrown copies); an answer without the count, or with one it cannot hold, decodes
// the same nodes.
func TestDecodeGraphSizesItsNodesOnce(t *testing.T) {
	nodes := make([]GraphNode, 300)
	for i := range nodes {
		nodes[i] = GraphNode{TaskRef: TaskRef{Chain: "fanin_chain", Task: "LeafTask", Params: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}}
	}
	nodes[0].Requires = []int{1, 2, 3}
	sent, err := jsonCodec{}.Marshal(&GraphResponse{Count: len(nodes), Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(sent, []byte(`{"count":300,`)) {
		t.Fatalf("a graph answer starts %.40s, not with its count", sent)
	}
	withoutCount := bytes.Replace(sent, []byte(`"count":300,`), nil, 1)
	for _, tc := range []struct {
		name    string
		data    []byte
		wantCap int // 0: whatever growing gave
	}{
		{"with its count", sent, 300},
		{"without a count", withoutCount, 0},
		{"a count too big for the answer", bytes.Replace(sent, []byte(`"count":300,`), []byte(`"count":99999999999,`), 1), 0},
		{"a count too small", bytes.Replace(sent, []byte(`"count":300,`), []byte(`"count":7,`), 1), 0},
		{"a count that is no number", bytes.Replace(sent, []byte(`"count":300,`), []byte(`"count":"x",`), 1), -1},
	} {
		var g GraphResponse
		err := jsonCodec{}.Unmarshal(tc.data, &g)
		if tc.wantCap < 0 {
			if err == nil {
				t.Errorf("%s: decoded, want an error", tc.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(g.Nodes, nodes) {
			t.Errorf("%s: the nodes differ from those sent", tc.name)
		}
		if tc.wantCap > 0 && cap(g.Nodes) != tc.wantCap {
			t.Errorf("%s: nodes in a slice of capacity %d, want %d (made once)", tc.name, cap(g.Nodes), tc.wantCap)
		}
		if cap(g.Nodes) > 2*len(nodes) {
			t.Errorf("%s: nodes in a slice of capacity %d for %d nodes", tc.name, cap(g.Nodes), len(nodes))
		}
	}
}
