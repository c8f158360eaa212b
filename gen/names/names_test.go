package names

import "testing"

func TestCheckType(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"reports", true}, {"etl_v2", true}, {"Reports", false}, {"2etl", false}, {"my-type", false},
		{"func", false}, {"main", false}, {"params", false}, {"", false},
	}
	for _, tt := range tests {
		if err := CheckType(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckType(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestCheckParam(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"day", true}, {"max_rows", true}, {"Day", false}, {"wait", false}, {"force", false}, {"_x", false},
	}
	for _, tt := range tests {
		if err := CheckParam(tt.name); (err == nil) != tt.ok {
			t.Errorf("CheckParam(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestCamelSnake(t *testing.T) {
	for in, want := range map[string]string{"hello_chain": "HelloChain", "daily": "Daily", "a__b": "AB", "x1_y": "X1Y"} {
		if got := Camel(in); got != want {
			t.Errorf("Camel(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"BadName": "bad_name", "Day": "day", "id": "id"} {
		if got := Snake(in); got != want {
			t.Errorf("Snake(%q) = %q, want %q", in, got, want)
		}
	}
	if !IsChainFile("hello_chain.go") || IsChainFile("helpers.go") || IsChainFile("Hello_chain.go") {
		t.Errorf("IsChainFile disagrees with the <name>_chain.go rule")
	}
}
