package confine

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fsRightsByABI are the file-system access rights each Landlock ABI
// handles (index = ABI version); past the table, the last entry is used.
// ABI 2 adds REFER, 3 TRUNCATE, 5 IOCTL_DEV, 9 RESOLVE_UNIX.
var fsRightsByABI = []uint64{
	0,
	1<<13 - 1, 1<<14 - 1, 1<<15 - 1, 1<<15 - 1, 1<<16 - 1,
	1<<16 - 1, 1<<16 - 1, 1<<16 - 1, 1<<17 - 1,
}

// Access rights granted by the rules.
const (
	llRead     = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	llReadData = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR
	llDevRW    = unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_TRUNCATE
	llAll      = ^uint64(0) // masked to what the ABI handles
	// llFileRights are the only rights a rule on a non-directory may carry.
	llFileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE |
		unix.LANDLOCK_ACCESS_FS_TRUNCATE | unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
)

// Rule grants access beneath Path (inside the sandbox's root).
type Rule struct {
	Path   string
	Access uint64
}

// LandlockABI returns the kernel's Landlock ABI version; ENOSYS when the
// kernel has no Landlock, EOPNOTSUPP when it is disabled at boot.
func LandlockABI() (int, error) {
	v, _, e := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}

// landlockRules is the rule set of a sandbox, as paths after pivot_root:
// the system trees readable and executable, /proc readable, the workspace,
// /tmp and /dev/shm writable, the harmless devices readable (null, zero and
// full also writable), and directory listing of / and /dev.
func landlockRules(cfg *Config, p *plan) []Rule {
	rules := []Rule{
		{"/", unix.LANDLOCK_ACCESS_FS_READ_DIR},
		{"/dev", unix.LANDLOCK_ACCESS_FS_READ_DIR},
		{"/proc", llReadData},
		{cfg.Workspace, llAll},
		{"/tmp", llAll},
		{"/dev/shm", llAll},
	}
	for _, d := range p.readOnlyDirs() {
		rules = append(rules, Rule{d, llRead})
	}
	for _, f := range p.readOnlyFiles() {
		rules = append(rules, Rule{f, unix.LANDLOCK_ACCESS_FS_READ_FILE})
	}
	for _, t := range p.devices {
		access := uint64(unix.LANDLOCK_ACCESS_FS_READ_FILE)
		switch t.path {
		case "/dev/null", "/dev/zero", "/dev/full":
			access = llDevRW
		}
		rules = append(rules, Rule{t.path, access})
	}
	return rules
}

// restrictLandlock enforces rules on the calling thread (which must have
// no_new_privs set). Every right the ABI knows is handled, so anything not
// granted is denied; from ABI 6 on, signals and abstract unix sockets
// outside the domain are denied too.
func restrictLandlock(abi int, rules []Rule) error {
	if abi < MinLandlockABI {
		return unix.EOPNOTSUPP
	}
	handled := fsRightsByABI[min(abi, len(fsRightsByABI)-1)]
	attr := unix.LandlockRulesetAttr{Handled_access_fs: handled}
	if abi >= ScopedLandlockABI {
		attr.Scoped = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
	}
	// The kernel accepts a larger struct whose extra fields are zero.
	fd, _, e := unix.RawSyscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr), 0)
	if e != 0 {
		return step("landlock_create_ruleset", e)
	}
	ruleset := int(fd)
	defer unix.Close(ruleset)
	for _, r := range rules {
		if err := addPathRule(ruleset, r, handled); err != nil {
			return err
		}
	}
	_, _, e = unix.RawSyscall(unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(ruleset), 0, 0)
	return step("landlock_restrict_self", errnoOrNil(e))
}

func addPathRule(ruleset int, r Rule, handled uint64) error {
	fd, err := unix.Open(r.Path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return step("open "+r.Path+" for a Landlock rule", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return step("stat "+r.Path, err)
	}
	access := r.Access & handled
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		access &= llFileRights
	}
	if access == 0 {
		return nil
	}
	attr := unix.LandlockPathBeneathAttr{Allowed_access: access, Parent_fd: int32(fd)}
	_, _, e := unix.RawSyscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), unix.LANDLOCK_RULE_PATH_BENEATH,
		uintptr(unsafe.Pointer(&attr)), 0, 0, 0)
	return step("add the Landlock rule for "+r.Path, errnoOrNil(e))
}

func errnoOrNil(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
