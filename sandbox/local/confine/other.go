//go:build !linux

package confine

import (
	"context"
	"errors"
	"os/exec"
	"runtime"
)

// Supported reports whether this platform can confine commands at all.
const Supported = false

var errUnsupported = errors.New("exec confinement needs Linux (namespaces and Landlock); this is " + runtime.GOOS)

// Cmd is one confined command (never on this platform).
type Cmd struct{ *exec.Cmd }

// Command always fails on this platform.
func Command(Config) (*Cmd, error) { return nil, errUnsupported }

// SetupError is never reached on this platform.
func (c *Cmd) SetupError() error { return errUnsupported }

// Probe always fails on this platform.
func Probe(context.Context, string, string) error { return errUnsupported }

// LandlockABI is 0 on this platform.
func LandlockABI() (int, error) { return 0, errUnsupported }

// Missing names the platform.
func Missing() []string {
	return []string{"platform: exec confinement needs Linux (user namespaces and Landlock); this is " + runtime.GOOS}
}
