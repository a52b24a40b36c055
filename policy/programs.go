package policy

import (
	"path"
	"strings"
)

// This file holds the knowledge about programs the policy needs: which
// environment variables change how programs are found or loaded, which
// programs run another command (wrappers), which run code given as a string
// (interpreters), and which reach the network. All lists are documented in
// docs/policy.md; keep the two in step.

// loaderEnvNames are variables that change which program runs, what it
// loads, or which configuration (and so which helper commands) it reads.
var loaderEnvNames = setOf(
	"PATH", "BASH_ENV", "ENV", "IFS", "SHELLOPTS", "BASHOPTS", "PS0", "PS1", "PS2", "PS3", "PS4",
	"PROMPT_COMMAND", "CDPATH", "GLOBIGNORE", "HOME", "ZDOTDIR", "INPUTRC", "HISTFILE", "SHELL",
	"POSIXLY_CORRECT", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONWARNINGS", "PYTHONBREAKPOINT",
	"NODE_OPTIONS", "NODE_REPL_EXTERNAL_MODULE", "RUBYOPT", "CLASSPATH", "TAR_OPTIONS",
	"EDITOR", "VISUAL", "PAGER", "BROWSER", "LESS", "LESSOPEN", "LESSCLOSE", "LESSKEY", "LESSKEYIN",
	"LESSEDIT", "EXINIT", "VIMINIT", "MYVIMRC", "VIMRUNTIME", "GCONV_PATH", "HOSTALIASES", "LOCPATH",
	"NLSPATH", "RESOLV_HOST_CONF", "MAKEFLAGS", "MAKEFILES", "MAKELEVEL", "CURL_HOME", "WGETRC",
	"GOFLAGS", "GOROOT", "GOENV", "GOTOOLCHAIN", "GOPATH", "RUSTC", "RUSTC_WRAPPER", "RUSTDOC",
	"CC", "CXX", "CPP", "LD", "AR", "AS", "NM", "FC", "OPENSSL_CONF", "OPENSSL_ENGINES",
	"OPENSSL_MODULES", "KUBECONFIG", "DOCKER_CONFIG", "DOCKER_HOST", "GLIBC_TUNABLES", "TERMINFO",
	"TERMINFO_DIRS", "PHPRC", "PHP_INI_SCAN_DIR", "TCLLIBPATH", "DOTNET_STARTUP_HOOKS",
	"SUDO_ASKPASS", "SUDO_EDITOR", "FCEDIT", "RSYNC_RSH", "RSYNC_CONNECT_PROG", "CVS_RSH", "SVN_SSH",
	"HGRCPATH", "GNUPGHOME", "MANOPT", "AWKLIBPATH", "TMPDIR", "XAUTHORITY", "CONFIG_SITE",
)

// loaderEnvPrefixes are prefixes of such variables: the dynamic loader
// (LD_PRELOAD, LD_AUDIT, DYLD_INSERT_LIBRARIES), exported bash functions,
// and the environment-configured tools (git, npm, yarn, pip, cargo, lua,
// perl, ruby, python, node, java, .NET's CLR, R, XDG directories).
var loaderEnvPrefixes = []string{"LD_", "DYLD_", "BASH_", "GIT_", "NPM_CONFIG_", "npm_config_", "YARN_",
	"PIP_", "CARGO_", "LUA_", "PERL", "RUBY", "PYTHON", "NODE_", "JAVA_", "_JAVA_", "JDK_", "CORECLR_",
	"COMPlus_", "DOTNET_", "R_", "XDG_", "GEM_", "BUNDLE_", "CGO_", "SSH_", "GNUPG", "AWS_", "GCONV_"}

// loaderEnvSuffixes are endings that name a search path, a program, a
// configuration or options of some tool (NODE_PATH, FOO_EDITOR, GIT_PAGER,
// MAVEN_OPTS, CFLAGS, JAVA_HOME, KUBECONFIG, WGETRC, LUA_INIT, ...).
var loaderEnvSuffixes = []string{"PATH", "PATHS", "LIB", "LIBS", "HOME", "DIR", "DIRS", "EDITOR",
	"PAGER", "ASKPASS", "_COMMAND", "_CMD", "_PROGRAM", "_PROG", "_SHELL", "_RSH", "_SSH", "_HOOK",
	"_HOOKS", "OPTS", "OPTIONS", "FLAGS", "CONFIG", "CONF", "RC", "INIT", "STARTUP", "_FILE", "_FILES",
	"_WRAPPER", "_PRELOAD", "_PLUGINS", "_LOADER"}

// loaderEnvSafe are common variables that match a prefix above but only
// name people, colours, switches or levels, never code or where code comes
// from.
var loaderEnvSafe = setOf("NODE_ENV", "NODE_NO_WARNINGS", "NODE_DEBUG", "NODE_DISABLE_COLORS",
	"NODE_TLS_REJECT_UNAUTHORIZED", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
	"PYTHONIOENCODING", "PYTHONUTF8", "PYTHONFAULTHANDLER", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
	"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME",
	"GIT_COMMITTER_EMAIL", "GIT_COMMITTER_DATE", "GIT_TERMINAL_PROMPT", "GIT_OPTIONAL_LOCKS",
	"CARGO_TERM_COLOR", "CARGO_INCREMENTAL", "CARGO_TERM_VERBOSE", "RUST_BACKTRACE", "RUST_LOG",
	"CGO_ENABLED", "PIP_NO_INPUT", "PIP_DISABLE_PIP_VERSION_CHECK", "PIP_NO_COLOR", "SSH_AUTH_SOCK",
	"YARN_ENABLE_PROGRESS_BARS", "BUNDLE_JOBS", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")

// isLoaderEnv reports whether assigning the variable name can change which
// program runs or what it loads: it is listed, or starts or ends like such
// variables do (and is not one of the known-harmless ones).
func isLoaderEnv(name string) bool {
	if loaderEnvNames[name] {
		return true
	}
	if loaderEnvSafe[name] {
		return false
	}
	for _, p := range loaderEnvPrefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	for _, s := range loaderEnvSuffixes {
		if strings.HasSuffix(name, s) && len(name) > len(s) || name == s {
			return true
		}
	}
	return false
}

// assignmentName returns NAME for a word "NAME=value" or "NAME+=value".
func assignmentName(s string) (string, bool) {
	i := strings.IndexByte(s, '=')
	if i <= 0 {
		return "", false
	}
	name := strings.TrimSuffix(s[:i], "+")
	for k, r := range name {
		if !(r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (k > 0 && r >= '0' && r <= '9')) {
			return "", false
		}
	}
	return name, name != ""
}

// varSetters are builtins whose operands name variables they set.
var varSetters = setOf("export", "declare", "typeset", "local", "readonly", "nameref", "read",
	"printf", "mapfile", "readarray", "getopts", "let", "unset")

// codeBuiltins run code that is not visible as a command of its own.
var codeBuiltins = map[string]string{
	"eval":   "eval runs its arguments as shell code",
	"source": "source runs the commands of a file",
	".":      ". runs the commands of a file",
	"trap":   "trap runs shell code given as a string when a signal arrives",
	"alias":  "alias makes a command name run other code",
	"enable": "enable can load builtins from a shared library",
	"hash":   "hash can make a command name run another program",
	"fc":     "fc re-runs commands from the history",
}

// interpreter describes a program that runs code given as a string.
type interpreter struct {
	codeLetters string   // short options that take code; may be clustered (-xc, -ne)
	codeLong    []string // long options that take code
	argOpts     []string // options that take a separate value
	stopOpts    []string // options after which the next operand is not a script (-m module)
	shell       bool     // the code is shell code
	stdin       bool     // with no script operand (or "-") it reads code from standard input
}

var shellInterp = interpreter{codeLetters: "c", argOpts: []string{"-o", "+o", "-O", "+O", "--rcfile", "--init-file"}, shell: true, stdin: true}

var interpreters = map[string]interpreter{
	"sh": shellInterp, "bash": shellInterp, "rbash": shellInterp, "zsh": shellInterp, "dash": shellInterp,
	"ksh": shellInterp, "mksh": shellInterp, "ash": shellInterp, "yash": shellInterp, "posh": shellInterp,
	"fish": shellInterp, "csh": shellInterp, "tcsh": shellInterp,
	"python":     {codeLetters: "c", argOpts: []string{"-W", "-X", "-Q"}, stopOpts: []string{"-m"}, stdin: true},
	"pypy":       {codeLetters: "c", argOpts: []string{"-W", "-X"}, stopOpts: []string{"-m"}, stdin: true},
	"node":       {codeLetters: "ep", codeLong: []string{"--eval", "--print"}, argOpts: []string{"-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions", "--input-type"}, stdin: true},
	"bun":        {codeLetters: "ep", codeLong: []string{"--eval", "--print"}},
	"perl":       {codeLetters: "eE", stdin: true},
	"ruby":       {codeLetters: "e", argOpts: []string{"-I", "-r"}, stdin: true},
	"php":        {codeLetters: "r", codeLong: []string{"--run"}, stdin: true},
	"lua":        {codeLetters: "e", stdin: true},
	"luajit":     {codeLetters: "e", stdin: true},
	"Rscript":    {codeLetters: "e"},
	"R":          {codeLetters: "e"},
	"osascript":  {codeLetters: "e"},
	"expect":     {codeLetters: "c", stdin: true},
	"tclsh":      {stdin: true},
	"pwsh":       {codeLong: []string{"-c", "-command", "-encodedcommand", "-e", "-ec"}},
	"powershell": {codeLong: []string{"-c", "-command", "-encodedcommand", "-e", "-ec"}},
}

// interpreterFor returns the interpreter entry for a program base name,
// folding versioned names (python3, python3.12, nodejs, pypy3, perl5.36).
func interpreterFor(base string) (interpreter, string, bool) {
	if in, ok := interpreters[base]; ok {
		return in, base, true
	}
	lower := strings.ToLower(base)
	if in, ok := interpreters[lower]; ok && (lower == "pwsh" || lower == "powershell") {
		return in, lower, true
	}
	trimmed := strings.TrimRight(base, "0123456789.")
	if base == "nodejs" {
		trimmed = "node"
	}
	if trimmed != base {
		if in, ok := interpreters[trimmed]; ok {
			return in, trimmed, true
		}
	}
	return interpreter{}, "", false
}

// networkProgram lists, for a program, the argument words that make it
// reach the network: any is a list of alternatives, each a set of words
// that must all appear among the arguments. An empty list means the program
// always reaches out. Matching is by word anywhere in the arguments, so it
// errs towards "network".
type networkProgram struct {
	any   [][]string
	noArg bool // with no arguments at all it also reaches out (yarn)
}

func words(ws ...string) [][]string {
	out := make([][]string, len(ws))
	for i, w := range ws {
		out[i] = strings.Fields(w)
	}
	return out
}

var networkPrograms = map[string]networkProgram{
	// always
	"curl": {}, "wget": {}, "nc": {}, "ncat": {}, "netcat": {}, "socat": {}, "ssh": {}, "scp": {},
	"sftp": {}, "rsync": {}, "ftp": {}, "lftp": {}, "telnet": {}, "http": {}, "https": {}, "xh": {},
	"aria2c": {}, "ping": {}, "ping6": {}, "dig": {}, "nslookup": {}, "host": {}, "nmap": {},
	"traceroute": {}, "tracepath": {}, "mosh": {}, "whois": {}, "npx": {}, "pnpx": {}, "bunx": {},
	"uvx": {}, "pacman": {}, "kubectl": {}, "helm": {}, "aws": {}, "gcloud": {}, "gsutil": {},
	"az": {}, "gh": {}, "heroku": {}, "vercel": {}, "netlify": {}, "fly": {}, "flyctl": {},
	"doctl": {}, "wrangler": {}, "firebase": {},
	// by subcommand
	"git":       {any: words("clone", "fetch", "pull", "push", "ls-remote", "submodule", "remote update")},
	"npm":       {any: words("install", "i", "ci", "add", "update", "up", "upgrade", "publish", "exec", "x", "create", "init", "audit", "outdated", "view", "info", "login", "search")},
	"pnpm":      {any: words("install", "i", "add", "update", "up", "upgrade", "dlx", "publish", "create", "fetch", "audit", "outdated")},
	"yarn":      {any: words("install", "add", "upgrade", "up", "dlx", "create", "publish", "npm", "outdated"), noArg: true},
	"bun":       {any: words("install", "i", "add", "update", "x", "create", "publish", "upgrade")},
	"pip":       {any: words("install", "download", "index")},
	"pipx":      {any: words("install", "run", "upgrade", "inject")},
	"uv":        {any: words("add", "sync", "lock", "run", "pip install", "tool", "venv --seed")},
	"poetry":    {any: words("install", "add", "update", "lock", "publish")},
	"pipenv":    {any: words("install", "update", "sync", "lock")},
	"python":    {any: words("pip install", "pip download", "ensurepip")},
	"apt":       {any: words("install", "update", "upgrade", "dist-upgrade", "full-upgrade", "download", "source", "build-dep")},
	"apt-get":   {any: words("install", "update", "upgrade", "dist-upgrade", "download", "source", "build-dep")},
	"apk":       {any: words("add", "update", "upgrade", "fetch")},
	"yum":       {any: words("install", "update", "upgrade", "makecache", "download")},
	"dnf":       {any: words("install", "update", "upgrade", "makecache", "download")},
	"zypper":    {any: words("install", "in", "refresh", "ref", "update", "up")},
	"brew":      {any: words("install", "update", "upgrade", "fetch", "tap", "reinstall")},
	"go":        {any: words("get", "install", "mod download", "mod tidy")},
	"cargo":     {any: words("install", "fetch", "add", "update", "search", "publish", "login")},
	"gem":       {any: words("install", "update", "fetch", "push", "sources")},
	"bundle":    {any: words("install", "update")},
	"composer":  {any: words("install", "require", "update", "create-project")},
	"docker":    {any: words("pull", "push", "login", "search", "build")},
	"terraform": {any: words("init", "plan", "apply", "destroy")},
}

// networkReason returns a description when the command (program base name
// and argument words, wildcards included as "") reaches the network.
func networkReason(base string, args []string) (string, bool) {
	np, ok := networkPrograms[base]
	if !ok {
		if _, name, isInterp := interpreterFor(base); isInterp && name == "python" {
			np, ok = networkPrograms["python"]
		} else if strings.HasPrefix(base, "pip") && strings.TrimLeft(base[3:], "0123456789.") == "" {
			np, ok = networkPrograms["pip"]
		}
	}
	if !ok {
		return "", false
	}
	if len(np.any) == 0 {
		return base + " reaches the network", true
	}
	if np.noArg && len(args) == 0 {
		return base + " with no arguments installs packages from the network", true
	}
	have := make(map[string]bool, len(args))
	for _, a := range args {
		have[a] = true
	}
	for _, alt := range np.any {
		all := true
		for _, w := range alt {
			if !have[w] {
				all = false
				break
			}
		}
		if all {
			return base + " " + strings.Join(alt, " ") + " reaches the network", true
		}
	}
	return "", false
}

// gitCodeOptions are git arguments that make git run a command or code given
// as a string (configuration that names a program, hooks, aliases).
var gitCodeOptions = []string{"-c", "--config-env", "--exec-path", "--upload-pack", "--receive-pack",
	"--ext-diff", "--extcmd", "-x", "--exec", "foreach", "filter-branch", "run"}

// gitConfigCodeKeys are configuration keys whose value is a program git runs.
var gitConfigCodeKeys = []string{"alias.", "core.pager", "core.sshcommand", "core.editor",
	"core.hookspath", "core.fsmonitor", "core.askpass", "diff.external", "sequence.editor",
	"credential.helper", "gpg.program", "pager.", "filter.", ".textconv", ".command", "include.path", "includeif."}

// gitCodeTrigger returns the git argument that makes it run code, if any.
func gitCodeTrigger(args []string) (string, bool) {
	for i, a := range args {
		for _, o := range gitCodeOptions {
			if a == o || strings.HasPrefix(a, o+"=") {
				if o == "run" && !(i > 0 && args[i-1] == "bisect") {
					continue
				}
				if o == "-x" && !containsWord(args, "rebase") && !containsWord(args, "difftool") {
					continue
				}
				return a, true
			}
		}
		if a == "config" {
			for _, k := range args[i+1:] {
				lk := strings.ToLower(k)
				for _, key := range gitConfigCodeKeys {
					if strings.HasPrefix(lk, key) || (strings.HasPrefix(key, ".") && strings.Contains(lk, key)) {
						return "config", true
					}
				}
			}
		}
	}
	return "", false
}

func containsWord(ws []string, w string) bool {
	for _, x := range ws {
		if x == w {
			return true
		}
	}
	return false
}

// findExecActions are find's actions that run a command.
var findExecActions = setOf("-exec", "-execdir", "-ok", "-okdir")

func setOf(ws ...string) map[string]bool {
	m := make(map[string]bool, len(ws))
	for _, w := range ws {
		m[w] = true
	}
	return m
}

// systemBinDirs hold the programs an allow rule may name by base name: a
// program there is the program of that name.
var systemBinDirs = setOf("/bin", "/usr/bin", "/usr/local/bin", "/sbin", "/usr/sbin", "/usr/local/sbin")

// baseName is the program name rules match: the last element of a path.
func baseName(prog string) string {
	if !strings.Contains(prog, "/") {
		return prog
	}
	b := path.Base(prog)
	if b == "/" || b == "." {
		return prog
	}
	return b
}
