package dispatch

import (
	"context"
	"testing"

	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/sandbox"
)

// TestToolOpsTable: every operation a host serves is either a lifecycle
// operation handled by Host.run or a tool in toolOps, and an operation that
// is neither is a CodeBadRequest naming the operations there are.
func TestToolOpsTable(t *testing.T) {
	lifecycle := map[string]bool{sandbox.OpCreate: true, OpOpen: true, OpShare: true, sandbox.OpDestroy: true}
	for _, op := range Ops {
		if _, isTool := toolOps[op]; isTool == lifecycle[op] {
			t.Errorf("op %q: tool table entry %v, lifecycle op %v: want exactly one", op, isTool, lifecycle[op])
		}
	}
	if len(toolOps)+len(lifecycle) != len(Ops) {
		t.Errorf("toolOps has %d entries, Ops names %d tools", len(toolOps), len(Ops)-len(lifecycle))
	}
	_, err := runTool(context.Background(), nil, "chmod", nil)
	if perr.CodeOf(err) != sandbox.CodeBadRequest {
		t.Fatalf("unknown op: %v, want %s", err, sandbox.CodeBadRequest)
	}
}
