package policy

// wrapper describes a program that runs another program given as its
// remaining operands (timeout 5 CMD...). Its options are parsed completely
// (spec); an option the spec does not know asks, because the policy could
// not tell which word is the command.
type wrapper struct {
	spec *optSpec
	// skip is how many operands come before the command (timeout DURATION);
	// skipRole says what they are to the policy (flock FILE is written).
	skip     int
	skipRole optRole
	// postCode are words that, right after the skipped operands, introduce
	// shell code (flock FILE -c CODE).
	postCode []string
	// dashOption: a lone "-" is an option, not the command (env -, su -).
	dashOption bool
	moreInput  bool   // the command gets more arguments at run time (xargs)
	defaultTo  string // the command when none is given (xargs: echo)
	setsEnv    bool   // NAME=value operands set the command's environment
	// shellCode: the operands, joined by spaces, are shell code (watch,
	// parallel and sg hand them to sh -c).
	shellCode bool
	// shellArgs: the operands after the skipped ones are arguments of a
	// shell (su USER -c CODE), so they are read as `sh ARGS`.
	shellArgs bool
	// fileOperand: the first operand is a file the program writes, not a
	// command (script FILE); the program starts a shell reading standard
	// input unless a code option is given.
	fileOperand bool
	// stdinShell: with no command the program starts a shell that reads
	// standard input (chroot DIR, su USER).
	stdinShell bool
}

func spec(defs ...optDef) *optSpec { return compileSpec(optSpec{defs: defs}) }

var wrappers = map[string]wrapper{
	"command": {spec: spec(flag('p'), flag('v').as(roleNoCommand), flag('V').as(roleNoCommand))},
	"builtin": {spec: spec()},
	"exec":    {spec: spec(value('a'), flag('c'), flag('l'))},
	"nohup":   {spec: spec(withStandard()...)},
	"setsid": {spec: spec(withStandard(flag('c', "ctty"), flag('f', "fork"), flag('w', "wait"),
		flag('h'), flag('V'))...)},
	"nice": {spec: compileSpec(optSpec{defs: withStandard(value('n', "adjustment")), legacyNumeric: true})},
	"timeout": {spec: spec(withStandard(flag('f', "foreground"), value('k', "kill-after"),
		flag('p', "preserve-status"), value('s', "signal"), flag('v', "verbose"))...), skip: 1},
	"env": {spec: spec(withStandard(flag('i', "ignore-environment"), flag('0', "null"), value('u', "unset"),
		value('C', "chdir").as(roleChdir), value('S', "split-string").as(roleCode), flag('v', "debug"),
		optional(0, "block-signal"), optional(0, "default-signal"), optional(0, "ignore-signal"),
		flag(0, "list-signal-handling"), value('P').as(roleLoader))...), setsEnv: true, dashOption: true},
	"stdbuf": {spec: spec(withStandard(value('i', "input"), value('o', "output"), value('e', "error"))...)},
	"ionice": {spec: spec(withStandard(value('c', "class"), value('n', "classdata"),
		value('p', "pid").as(roleNoCommand), value('P', "pgid").as(roleNoCommand),
		value('u', "uid").as(roleNoCommand), flag('t', "ignore"), flag('h'), flag('V'))...)},
	"chrt": {spec: spec(withStandard(flag('a', "all-tasks"), flag('b', "batch"), flag('d', "deadline"),
		flag('e', "ext"), flag('f', "fifo"), flag('i', "idle"), flag('o', "other"), flag('r', "rr"),
		flag('R', "reset-on-fork"), value('T', "sched-runtime"), value('P', "sched-period"),
		value('D', "sched-deadline"), flag('m', "max").as(roleNoCommand), flag('p', "pid").as(roleNoCommand),
		flag('v', "verbose"), flag('h'), flag('V'))...), skip: 1},
	"taskset": {spec: spec(withStandard(flag('a', "all-tasks"), flag('p', "pid").as(roleNoCommand),
		flag('c', "cpu-list"), flag('h'), flag('V'))...), skip: 1},
	"time": {spec: spec(value('f', "format"), value('o', "output").as(roleWrite), flag('a', "append"),
		flag('p', "portability"), flag('v', "verbose"), flag('q', "quiet"), flag('V', "version"), flag(0, "help"))},
	"xargs": {spec: spec(withStandard(flag('0', "null"), value('a', "arg-file").as(roleRead), value('d', "delimiter"),
		value('E'), optional('e', "eof"), value('I'), optional('i', "replace"), value('L'),
		optional('l', "max-lines"), value('n', "max-args"), flag('o', "open-tty"), flag('p', "interactive"),
		value('P', "max-procs"), flag('r', "no-run-if-empty"), value('s', "max-chars"), flag('t', "verbose"),
		flag('x', "exit"), value(0, "process-slot-var"), flag(0, "show-limits"))...),
		moreInput: true, defaultTo: "echo"},
	"sudo": {spec: spec(flag('A', "askpass"), flag('b', "background"), flag('B', "bell"), value('C', "close-from"),
		value('D', "chdir").as(roleChdir), flag('E'), optional(0, "preserve-env"), flag('e', "edit").as(roleEdit),
		value('g', "group"), flag('H', "set-home"), flag('h', "help"), value(0, "host"),
		flag('i', "login").as(roleShell), flag('K', "remove-timestamp").as(roleNoCommand),
		flag('k', "reset-timestamp"), flag('l', "list"), flag('N', "no-update"), flag('n', "non-interactive"),
		flag('P', "preserve-groups"), value('p', "prompt"), value('R', "chroot"), value('r', "role"),
		flag('S', "stdin"), flag('s', "shell").as(roleShell), value('T', "command-timeout"), value('t', "type"),
		value('U', "other-user"), value('u', "user"), flag('V', "version"), flag('v', "validate").as(roleNoCommand)),
		setsEnv: true},
	"doas": {spec: spec(value('C').as(roleNoCommand), flag('L').as(roleNoCommand), flag('n'),
		flag('s').as(roleShell), value('u'))},
	"strace": {spec: spec(withStandard(
		flag('c', "summary-only"), flag('C', "summary"), flag('d'), flag('D'), flag('f', "follow-forks"), flag('F'),
		flag('h'), flag('i', "instruction-pointer"), flag('k', "stack-trace"), flag('n', "syscall-number"),
		flag('q', "quiet"), flag('r', "relative-timestamps"), flag('t', "absolute-timestamps"),
		flag('T', "syscall-times"), flag('v', "no-abbrev"), flag('V'), flag('w', "summary-wall-clock"),
		flag('x'), flag('y', "decode-fds"), flag('z', "successful-only"), flag('Z', "failed-only"),
		value('a', "columns"), value('b', "detach-on"), value('e', "trace"), value('I', "interruptible"),
		value('o', "output").as(roleWrite), value('O', "summary-syscall-overhead"), value('p', "attach"),
		value('P', "trace-path"), value('s', "string-limit"), value('S', "summary-sort-by"),
		value('u', "user"), value('U', "summary-columns"), value('X', "const-print-style"),
		value('E', "env"), flag(0, "seccomp-bpf"), flag(0, "output-separately"))...)},
	"ltrace": {spec: spec(withStandard(
		flag('b'), flag('c'), flag('C', "demangle"), flag('f'), flag('h'), flag('i'), flag('L'), flag('r'),
		flag('S'), flag('t'), flag('T'), flag('V'), value('a', "align"), value('A'), value('D', "debug"),
		value('e'), value('F', "config").as(roleRead), value('l', "library"), value('n', "indent"),
		value('o', "output").as(roleWrite), value('p'), value('s'), value('u'), value('w', "where"), value('x'))...)},
	"flock": {spec: spec(withStandard(flag('s', "shared"), flag('x', "exclusive"), flag('e'), flag('u', "unlock"),
		flag('n', "nonblock", "nb"), value('w', "timeout", "wait"), value('E', "conflict-exit-code"),
		flag('o', "close"), flag(0, "verbose"), flag('F', "no-fork"), value('c', "command").as(roleCode),
		flag('h'), flag('V'))...), skip: 1, skipRole: roleWrite, postCode: []string{"-c", "--command"}},
	"chroot": {spec: spec(withStandard(value(0, "userspec"), value(0, "groups"), flag(0, "skip-chdir"))...),
		skip: 1, skipRole: roleRead, stdinShell: true},
	"unbuffer":     {spec: spec(flag('p'))},
	"torsocks":     {spec: spec(withStandard(value('u', "user"), value('p', "pass"), value('a', "address"), value('P', "port"), flag('i', "isolate"), flag('d', "debug"), flag('q', "quiet"), flag('h'), flag(0, "shell").as(roleShell))...)},
	"proxychains":  {spec: spec(value('f').as(roleRead), flag('q'))},
	"proxychains4": {spec: spec(value('f').as(roleRead), flag('q'))},
	"firejail":     {spec: compileSpec(optSpec{defs: firejailOpts})},
	"busybox":      {spec: spec(flag(0, "list"), flag(0, "list-full"), flag(0, "help"))},
	"caffeinate":   {spec: spec(flag('d'), flag('i'), flag('m'), flag('s'), flag('u'), value('t'), value('w'))},
	"systemd-run": {spec: spec(withStandard(value('p', "property"), value('u', "unit"), value('E', "setenv"),
		value(0, "description"), value(0, "slice"), value('M', "machine"), value('H', "host"),
		value(0, "working-directory").as(roleChdir), flag('d', "same-dir"), value(0, "uid"), value(0, "gid"),
		value(0, "nice"), value(0, "service-type"), flag('t', "pty"), flag('P', "pipe"),
		flag('S', "shell").as(roleShell), flag('q', "quiet"), flag('G', "collect"), flag(0, "wait"),
		flag(0, "user"), flag(0, "system"), flag(0, "scope"), flag('r', "remain-after-exit"),
		flag(0, "no-block"), flag(0, "no-ask-password"), flag(0, "send-sighup"), flag('h'))...)},
	"unshare": {spec: spec(withStandard(optional('m', "mount"), optional('u', "uts"), optional('i', "ipc"),
		optional('n', "net"), optional('p', "pid"), optional('U', "user"), optional('C', "cgroup"),
		optional('T', "time"), flag('f', "fork"), optional(0, "mount-proc"), flag('r', "map-root-user"),
		flag('c', "map-current-user"), optional(0, "kill-child"), value(0, "propagation"), value(0, "setgroups"),
		value('R', "root"), value('w', "wd").as(roleChdir), value('S', "setuid"), value('G', "setgid"),
		value(0, "map-user"), value(0, "map-group"), flag(0, "keep-caps"), flag('h'), flag('V'))...)},
	"nsenter": {spec: spec(withStandard(flag('a', "all"), value('t', "target"), optional('m', "mount"),
		optional('u', "uts"), optional('i', "ipc"), optional('n', "net"), optional('p', "pid"),
		optional('C', "cgroup"), optional('U', "user"), optional('T', "time"), value('S', "setuid"),
		value('G', "setgid"), flag(0, "preserve-credentials"), optional('r', "root"), optional('w', "wd"),
		flag('F', "no-fork"), flag('Z', "follow-context"), flag('h'), flag('V'))...)},
	"runuser": {spec: spec(withStandard(value('u', "user"), value('g', "group"), value('G', "supp-group"),
		flag('l', "login"), flag('m', "preserve-environment"), flag('p'), value('s', "shell"),
		value('c', "command").as(roleCode), value(0, "session-command").as(roleCode),
		value('w', "whitelist-environment"), flag('P', "pty"), flag('f', "fast"), flag('h'), flag('V'))...),
		dashOption: true},
	"su": {spec: spec(withStandard(value('g', "group"), value('G', "supp-group"), flag('l', "login"),
		flag('m', "preserve-environment"), flag('p'), value('s', "shell"), value('c', "command").as(roleCode),
		value(0, "session-command").as(roleCode), value('w', "whitelist-environment"), flag('P', "pty"),
		flag('f', "fast"), flag('h'), flag('V'))...),
		skip: 1, dashOption: true, shellArgs: true, stdinShell: true},
	"script": {spec: spec(withStandard(value('c', "command").as(roleCode), flag('a', "append"),
		value('E', "echo"), flag('e', "return"), flag('f', "flush"), value('I', "log-in").as(roleWrite),
		value('O', "log-out").as(roleWrite), value('B', "log-io").as(roleWrite),
		value('T', "log-timing").as(roleWrite), value('m', "logging-format"), value('o', "output-limit"),
		flag('q', "quiet"), optional('t', "timing").as(roleWrite), flag('h'), flag('V'))...),
		fileOperand: true},
	"watch": {spec: spec(withStandard(flag('b', "beep"), flag('c', "color"), flag('C', "no-color"),
		optional('d', "differences"), flag('e', "errexit"), flag('g', "chgexit"), flag('t', "no-title"),
		flag('w', "no-wrap"), flag('x', "exec"), flag('p', "precise"), flag('r', "no-rerun"),
		value('q', "equexit"), value('n', "interval"), flag('h'), flag('v'))...), shellCode: true},
	"parallel": {spec: spec(withStandard(value('j', "jobs", "max-procs"), flag('k', "keep-order"),
		value('S', "sshlogin"), flag(0, "eta"), flag(0, "bar"), flag('X'), flag('m'), flag('q', "quote"),
		flag('0', "null"), value('a', "arg-file").as(roleRead), value('d', "delimiter"), value('I'),
		value(0, "colsep"), value('N'), value('n', "max-args"), value(0, "halt"),
		value(0, "joblog").as(roleWrite), value(0, "results").as(roleWrite), flag(0, "tag"), flag(0, "dry-run"),
		flag(0, "will-cite"), flag(0, "pipe"), value(0, "block"), value(0, "timeout"), value(0, "retries"),
		flag('u', "ungroup"), flag(0, "line-buffer"), flag('v'), flag(0, "progress"))...), shellCode: true},
	"sg":        {spec: spec(), skip: 1, shellCode: true},
	"catchsegv": {spec: spec()},
	"rlwrap": {spec: spec(withStandard(flag('a', "always-readline"), flag('A', "ansi-colour-aware"),
		value('b', "break-chars"), flag('c', "complete-filenames"), value('C', "command-name"),
		value('D', "history-no-dupes"), value('e', "extra-char-after-completion"),
		value('f', "file").as(roleRead), value('g', "forget-matching"), value('H', "history-filename").as(roleWrite),
		flag('i', "case-insensitive"), value('l', "logfile").as(roleWrite), flag('n', "no-warnings"),
		flag('N', "no-children"), value('O', "only-cook"), value('p', "prompt-colour"),
		value('P', "pre-given"), value('q', "quote-characters"), flag('r', "remember"),
		flag('R', "renice"), value('s', "histsize"), value('S', "substitute-prompt"),
		value('t', "set-term-name"), value('w', "polling"), flag('W'), flag('h'), flag('v'))...)},
}

// firejailOpts: firejail's options take a value only after `=`, so an
// option it adds later cannot swallow the command; the few that matter are
// named. A short option other than these asks.
var firejailOpts = []optDef{flag(0, "quiet"), flag(0, "noprofile"), flag(0, "private"), flag(0, "net"),
	flag(0, "noroot"), flag(0, "seccomp"), flag(0, "caps.drop"), flag(0, "nonewprivs"), flag(0, "nogroups"),
	flag(0, "x11"), flag(0, "debug"), flag(0, "help"), flag(0, "version"), flag(0, "appimage"),
	flag(0, "shell").as(roleShell), optional(0, "profile"), optional(0, "whitelist"), optional(0, "blacklist"),
	optional(0, "read-only"), optional(0, "private-tmp"), optional(0, "dns"), optional(0, "name"),
	optional(0, "join"), optional(0, "env"), optional(0, "rlimit-as"), optional(0, "timeout"),
	flag('c')}
