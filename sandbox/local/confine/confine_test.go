package confine

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestCheckWorkspace(t *testing.T) {
	for _, tc := range []struct {
		name, ws string
		ok       bool
	}{
		{"project directory", "/home/me/project", true},
		{"under /tmp", "/tmp/ws", true},
		{"root", "/", false},
		{"root with dots", "/usr/..", false},
		{"relative", "ws", false},
		{"proc", "/proc/1", false},
		{"sys", "/sys", false},
		{"dev", "/dev/shm/x", false},
		{"devices look-alike", "/devices", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := CheckWorkspace(tc.ws); (err == nil) != tc.ok {
				t.Errorf("CheckWorkspace(%q) = %v, want ok %v", tc.ws, err, tc.ok)
			}
		})
	}
}

// TestFSRightsByABI pins the table to the kernel's access-right bits.
func TestFSRightsByABI(t *testing.T) {
	for _, tc := range []struct {
		abi   int
		right uint64
		has   bool
	}{
		{1, unix.LANDLOCK_ACCESS_FS_MAKE_SYM, true},
		{1, unix.LANDLOCK_ACCESS_FS_REFER, false},
		{2, unix.LANDLOCK_ACCESS_FS_REFER, true},
		{2, unix.LANDLOCK_ACCESS_FS_TRUNCATE, false},
		{3, unix.LANDLOCK_ACCESS_FS_TRUNCATE, true},
		{4, unix.LANDLOCK_ACCESS_FS_IOCTL_DEV, false},
		{5, unix.LANDLOCK_ACCESS_FS_IOCTL_DEV, true},
		{8, unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX, false},
		{9, unix.LANDLOCK_ACCESS_FS_RESOLVE_UNIX, true},
	} {
		if got := fsRightsByABI[tc.abi]&tc.right != 0; got != tc.has {
			t.Errorf("ABI %d right %#x: handled %v, want %v", tc.abi, tc.right, got, tc.has)
		}
	}
	for i := 1; i < len(fsRightsByABI); i++ {
		if fsRightsByABI[i]&fsRightsByABI[i-1] != fsRightsByABI[i-1] {
			t.Errorf("ABI %d drops rights of ABI %d", i, i-1)
		}
	}
	if abi, err := LandlockABI(); err != nil || abi < MinLandlockABI {
		t.Errorf("this machine's Landlock ABI %d (%v) is below %d", abi, err, MinLandlockABI)
	}
}
