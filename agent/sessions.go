package agent

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/polos-run/polos"
	"github.com/polos-run/polos/events"
	"github.com/polos-run/polos/llm"
	"github.com/polos-run/polos/perr"
	"github.com/polos-run/polos/protocol"
)

// KVSessions keeps each session's conversation in the polos_sessions KV
// bucket under <ns>.<agent>.<session>.
type KVSessions struct {
	JS        jetstream.JetStream
	Namespace string
}

func (s KVSessions) key(agent, session string) (string, error) {
	if err := events.ValidateID("session ID", session); err != nil {
		return "", err
	}
	return s.Namespace + "." + agent + "." + session, nil
}

// Load returns the saved conversation (none for a new session).
func (s KVSessions) Load(ctx context.Context, agent, session string) ([]llm.Message, error) {
	k, err := s.key(agent, session)
	if err != nil {
		return nil, err
	}
	kv, err := s.JS.KeyValue(ctx, protocol.SessionsKV)
	if err != nil {
		return nil, protocol.Unavailable(err, events.CodeStoreIO, "sessions bucket unavailable")
	}
	e, err := kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, perr.Wrap(err, events.CodeStoreIO, "", "cannot load session %s", session)
	}
	var msgs []llm.Message
	if err := json.Unmarshal(e.Value(), &msgs); err != nil {
		return nil, perr.Wrap(err, events.CodeGarbage, "delete the key with `nats kv del "+protocol.SessionsKV+" "+k+"`", "session %s is unreadable", session)
	}
	return msgs, nil
}

// Save replaces the session's conversation.
func (s KVSessions) Save(ctx context.Context, agent, session string, msgs []llm.Message) error {
	k, err := s.key(agent, session)
	if err != nil {
		return err
	}
	kv, err := s.JS.KeyValue(ctx, protocol.SessionsKV)
	if err != nil {
		return protocol.Unavailable(err, events.CodeStoreIO, "sessions bucket unavailable")
	}
	b, _ := json.Marshal(msgs)
	if _, err := kv.Put(ctx, k, b); err != nil {
		return perr.Wrap(err, events.CodeStoreIO, "", "cannot save session %s (%d bytes)", session, len(b))
	}
	return nil
}

// SessionStore keeps conversations across runs of a session.
type SessionStore interface {
	Load(ctx context.Context, agent, session string) ([]llm.Message, error)
	Save(ctx context.Context, agent, session string, msgs []llm.Message) error
}

// loadSession returns the conversation of earlier runs of this session (a
// recorded step).
func (r *runState) loadSession() []llm.Message {
	if r.deps.Sessions == nil || r.ctx.Session() == "" {
		return nil
	}
	msgs, err := polos.Step(r.ctx, "session:load", func(c context.Context, _ string) ([]llm.Message, error) {
		return r.deps.Sessions.Load(c, r.cfg.ID, r.ctx.Session())
	}, polos.Idempotent())
	if err != nil {
		return nil
	}
	return msgs
}

// saveSession stores the conversation for the session's next run, keeping
// the last conversation_history messages without splitting a tool call
// from its results.
func (r *runState) saveSession() {
	if r.deps.Sessions == nil || r.ctx.Session() == "" || r.msgs == nil {
		return
	}
	keep := trimHistory(*r.msgs, r.historyLimit())
	_, _ = polos.Step(r.ctx, "session:save", func(c context.Context, _ string) (bool, error) {
		return true, r.deps.Sessions.Save(c, r.cfg.ID, r.ctx.Session(), keep)
	}, polos.Idempotent())
}
