package replay

import (
	"encoding/json"
	"fmt"

	"time"

	"github.com/polos-run/polos/perr"
)

// wctx is the Context handed to workflow code.
type wctx struct{ r *Runner }

func (c *wctx) Deadline() (time.Time, bool) { return c.r.ctx.Deadline() }
func (c *wctx) Done() <-chan struct{}       { return c.r.ctx.Done() }
func (c *wctx) Err() error                  { return c.r.ctx.Err() }
func (c *wctx) Value(k any) any             { return c.r.ctx.Value(k) }
func (c *wctx) RunID() string               { return c.r.runID }
func (c *wctx) Workflow() string            { return c.r.workflow }
func (c *wctx) Namespace() string           { return c.r.Namespace }
func (c *wctx) Session() string             { return c.r.session }
func (c *wctx) IsReplaying() bool           { return c.r.pos < c.r.maxPos }

func (c *wctx) Step(name string, fn StepFunc, opts ...StepOption) (json.RawMessage, error) {
	if c.r.exiting {
		return nil, errUnwinding()
	}
	return c.r.step(name, fn, opts)
}

func (c *wctx) Now() time.Time {
	var t time.Time
	if c.r.exiting {
		return t
	}
	_ = json.Unmarshal(c.r.value("now", func() any { return c.r.Clock().UTC() }), &t)
	return t
}

func (c *wctx) UUID() string {
	var s string
	if c.r.exiting {
		return s
	}
	_ = json.Unmarshal(c.r.value("uuid", func() any {
		b := randomUint64()
		b2 := randomUint64()
		return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", uint32(b), uint16(b>>32), uint16(b>>48)&0xfff,
			(uint16(b2)&0x3fff)|0x8000, (b2>>16)&0xffffffffffff)
	}), &s)
	return s
}

// Random returns a recorded random number. It travels as a JSON string
// because JSON numbers lose precision above 2^53.
func (c *wctx) Random() uint64 {
	var s string
	if c.r.exiting {
		return 0
	}
	_ = json.Unmarshal(c.r.value("random", func() any { return fmt.Sprint(randomUint64()) }), &s)
	var v uint64
	_, _ = fmt.Sscan(s, &v)
	return v
}

func (c *wctx) Sleep(d time.Duration) error {
	if c.r.exiting {
		return errUnwinding()
	}
	return c.r.sleep(d)
}

func (c *wctx) Suspend(key string, payload any, opts ...SuspendOption) (json.RawMessage, error) {
	if c.r.exiting {
		return nil, errUnwinding()
	}
	return c.r.suspend(key, payload, opts)
}

func (c *wctx) WaitForEvent(topic string, timeout time.Duration) (json.RawMessage, error) {
	if c.r.exiting {
		return nil, errUnwinding()
	}
	return c.r.waitForEvent(topic, timeout)
}

func (c *wctx) Invoke(workflow string, input any, opts ...InvokeOption) (string, error) {
	if c.r.exiting {
		return "", errUnwinding()
	}
	return c.r.invoke(workflow, input, opts)
}

func (c *wctx) WaitChild(childID string) (json.RawMessage, error) {
	if c.r.exiting {
		return nil, errUnwinding()
	}
	return c.r.waitChild(childID)
}

func (c *wctx) Annotate(name string, attrs map[string]string) error {
	if c.IsReplaying() || c.r.exiting {
		return nil
	}
	c.r.append(annotation(name, attrs))
	return nil
}

// As lets perr.CodeOf read the code of a recorded error.
func (e *RecordedError) As(target any) bool {
	if p, ok := target.(**perr.Error); ok && e.Info.Code != "" {
		*p = &perr.Error{Code: perr.Code(e.Info.Code), Msg: e.Info.Message}
		return true
	}
	return false
}
