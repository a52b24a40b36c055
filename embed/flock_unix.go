//go:build unix

package embed

import (
	"os"
	"syscall"
)

func flock(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errLocked
	}
	return nil
}
