package protocol

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos/perr"
)

// WorkflowMeta is what executors advertise about a workflow they serve, so
// that clients can refuse unknown names at once and start runs on the
// workflow's queue with its concurrency limit.
type WorkflowMeta struct {
	Name             string `json:"name"`
	Queue            string `json:"queue,omitempty"`
	ConcurrencyLimit int    `json:"concurrency_limit,omitempty"`
	Kind             string `json:"kind,omitempty"` // "agent" or "workflow"
}

// Advertise records that this namespace's executors serve the workflows.
func Advertise(ctx context.Context, js jetstream.JetStream, ns string, metas []WorkflowMeta) error {
	kv, err := js.KeyValue(ctx, WorkflowsKV)
	if err != nil {
		return Unavailable(err, CodeStoreIO, "workflows bucket unavailable")
	}
	for _, m := range metas {
		b, _ := json.Marshal(m)
		if _, err := kv.Put(ctx, ns+"."+m.Name, b); err != nil {
			return perr.Wrap(err, CodeStoreIO, "", "cannot advertise workflow %s", m.Name)
		}
	}
	return nil
}

// LookupWorkflow returns the advertised metadata of name. known lists every
// advertised workflow of the namespace; it is empty when no executor ever
// advertised (then callers should not refuse unknown names).
func LookupWorkflow(ctx context.Context, js jetstream.JetStream, ns, name string) (meta *WorkflowMeta, known []string, err error) {
	kv, err := js.KeyValue(ctx, WorkflowsKV)
	if err != nil {
		return nil, nil, nil // an older deployment: no advertisement
	}
	if e, err := kv.Get(ctx, ns+"."+name); err == nil {
		var m WorkflowMeta
		if json.Unmarshal(e.Value(), &m) == nil {
			return &m, nil, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, err
	}
	if st, err := kv.Status(ctx); err == nil && st.Values() == 0 {
		return nil, nil, nil // nothing advertised yet: do not refuse names
	}
	lister, err := kv.ListKeysFiltered(ctx, ns+".*")
	if err != nil {
		return nil, nil, nil
	}
	for k := range lister.Keys() {
		known = append(known, strings.TrimPrefix(k, ns+"."))
	}
	sort.Strings(known)
	return nil, known, nil
}
