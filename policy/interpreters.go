package policy

import "strings"

// Interpreters whose options are parsed completely (see options.go). The
// others in the interpreters table are read with the simpler loop of
// interpreterHazards.

// Roles of interpreter options (beyond those of options.go).
const (
	roleInterpCode  optRole = iota + 100 // the value is code (node -e CODE)
	roleShellCode                        // the first operand is code (sh -c CODE)
	roleModule                           // the value is a module to preload (node --import M)
	roleModuleStop                       // the value is a module to run; no script operand (python -m M)
	roleInteractive                      // it reads code from standard input (node -i, python -i)
	roleLoadsConfig                      // it loads a file that changes what runs (node --env-file)
	roleNoScript                         // it runs no code at all (node --version, node --test)
)

// nodeSpec: node's options as of v20–v24 (`node --help`). Node accepts
// `--opt value` for every option that takes a value, so an option it does
// not know could swallow the script's name: such an option asks.
var nodeSpec = compileSpec(optSpec{defs: func() []optDef {
	defs := []optDef{
		value('e', "eval").as(roleInterpCode), value('p', "print").as(roleInterpCode),
		value('r', "require").as(roleModule), value(0, "import").as(roleModule),
		value(0, "loader", "experimental-loader").as(roleModule),
		value(0, "env-file", "env-file-if-exists").as(roleLoadsConfig),
		value(0, "openssl-config", "experimental-config-file", "experimental-policy").as(roleLoadsConfig),
		flag('i', "interactive").as(roleInteractive),
		value('C', "conditions"),
		flag('c', "check"), flag('h', "help").as(roleNoScript), flag('v', "version").as(roleNoScript),
		flag(0, "v8-options").as(roleNoScript), flag(0, "completion-bash").as(roleNoScript),
		flag(0, "test").as(roleNoScript), value(0, "run").as(roleNoScript),
		optional(0, "inspect", "inspect-brk", "inspect-wait"),
	}
	for _, v := range strings.Fields(`allow-fs-read allow-fs-write build-snapshot-config cpu-prof-dir
		cpu-prof-interval cpu-prof-name diagnostic-dir disable-proto disable-warning dns-result-order
		experimental-default-type experimental-sea-config heap-prof-dir heap-prof-interval heap-prof-name
		heapsnapshot-near-heap-limit heapsnapshot-signal icu-data-dir input-type inspect-port debug-port
		inspect-publish-uid max-http-header-size network-family-autoselection-attempt-timeout
		policy-integrity redirect-warnings report-dir report-directory report-filename report-signal
		secure-heap secure-heap-min snapshot-blob test-concurrency test-name-pattern test-skip-pattern
		test-reporter test-reporter-destination test-shard test-timeout title tls-cipher-list tls-keylog
		trace-event-categories trace-event-file-pattern trace-require-module unhandled-rejections
		use-largepages v8-pool-size watch-path localstorage-file stack-size max-old-space-size
		max-semi-space-size test-coverage-include test-coverage-exclude test-coverage-branches
		test-coverage-functions test-coverage-lines test-isolation experimental-test-isolation
		watch-kill-signal`) {
		defs = append(defs, value(0, v))
	}
	for _, f := range strings.Fields(`abort-on-uncaught-exception allow-addons allow-child-process allow-wasi
		allow-worker allow-net build-snapshot cpu-prof disallow-code-generation-from-strings
		disable-wasm-trap-handler enable-etw-stack-walking enable-fips enable-network-family-autoselection
		enable-source-maps entry-url experimental-eventsource experimental-import-meta-resolve
		experimental-network-imports experimental-network-inspection experimental-permission permission
		experimental-print-required-tla experimental-require-module experimental-detect-module
		experimental-test-coverage experimental-test-module-mocks experimental-vm-modules
		experimental-wasm-modules experimental-websocket experimental-strip-types
		experimental-transform-types experimental-sqlite experimental-webstorage experimental-addon-modules
		experimental-shadow-realm experimental-global-navigator experimental-async-context-frame
		expose-gc force-context-aware force-fips force-node-api-uncaught-exceptions-policy
		frozen-intrinsics heap-prof huge-max-old-generation-size insecure-http-parser
		interpreted-frames-native-stack jitless no-addons no-deprecation no-experimental-detect-module
		no-experimental-fetch no-experimental-global-customevent no-experimental-global-webcrypto
		no-experimental-repl-await no-experimental-require-module no-experimental-strip-types
		no-experimental-websocket no-extra-info-on-fatal-exception no-force-async-hooks-checks
		no-global-search-paths no-network-family-autoselection no-warnings node-memory-debug
		openssl-legacy-provider openssl-shared-config pending-deprecation preserve-symlinks
		preserve-symlinks-main prof prof-process report-compact report-exclude-network
		report-on-fatalerror report-on-signal report-uncaught-exception test-force-exit test-only
		test-update-snapshots throw-deprecation tls-max-v1.2 tls-max-v1.3 tls-min-v1.0 tls-min-v1.1
		tls-min-v1.2 tls-min-v1.3 trace-atomics-wait trace-deprecation trace-exit trace-promises
		trace-sigint trace-sync-io trace-tls trace-uncaught trace-warnings track-heap-objects
		use-bundled-ca use-openssl-ca use-system-ca watch watch-preserve-output zero-fill-buffers
		expose-internals`) {
		defs = append(defs, flag(0, f))
	}
	return defs
}()})

// pythonSpec: CPython 3's options.
var pythonSpec = compileSpec(optSpec{defs: []optDef{
	value('c').as(roleInterpCode), value('m').as(roleModuleStop), value('W'), value('X'), value('Q'),
	flag('i').as(roleInteractive), flag('b'), flag('B'), flag('d'), flag('E'), flag('I'), flag('O'),
	flag('P'), flag('q'), flag('s'), flag('S'), flag('u'), flag('v'), flag('x'), flag('R'), flag('3'),
	flag('t'), flag('h', "help").as(roleNoScript), flag('V', "version").as(roleNoScript),
	flag('?').as(roleNoScript), flag(0, "help-env").as(roleNoScript), flag(0, "help-xoptions").as(roleNoScript),
	flag(0, "help-all").as(roleNoScript), value(0, "check-hash-based-pycs"),
}})

// posixShellSpec: the options of sh, dash, bash, ksh and their kin (`+x`
// is read as `-x`). `-c` makes the first operand the code; `-s` reads
// the code from standard input.
var posixShellSpec = compileSpec(optSpec{defs: []optDef{
	flag('c').as(roleShellCode), flag('s').as(roleInteractive), value('o'), value('O'),
	flag('a'), flag('b'), flag('C'), flag('e'), flag('f'), flag('h'), flag('i'), flag('k'), flag('l'),
	flag('m'), flag('n'), flag('p'), flag('r'), flag('t'), flag('u'), flag('v'), flag('x'), flag('B'),
	flag('D'), flag('E'), flag('H'), flag('P'), flag('T'), flag('V'), flag('q'), flag('X'),
	value(0, "rcfile", "init-file"), flag(0, "login"), flag(0, "noprofile"), flag(0, "norc"), flag(0, "posix"),
	flag(0, "restricted"), flag(0, "verbose"), flag(0, "version").as(roleNoScript), flag(0, "help").as(roleNoScript),
	flag(0, "debugger"), flag(0, "dump-strings"), flag(0, "dump-po-strings"), flag(0, "noediting"),
	flag(0, "pretty-print"), flag(0, "wordexp"),
}})

// specInterpreters are the interpreters read with a spec.
var specInterpreters = map[string]*optSpec{
	"node": nodeSpec, "python": pythonSpec, "pypy": pythonSpec,
	"sh": posixShellSpec, "bash": posixShellSpec, "rbash": posixShellSpec, "dash": posixShellSpec,
	"ksh": posixShellSpec, "mksh": posixShellSpec, "ash": posixShellSpec, "posh": posixShellSpec,
	"yash": posixShellSpec,
}

// codeURLSchemes are URL schemes whose "module" is code written into the
// command line or fetched from elsewhere.
var codeURLSchemes = []string{"data:", "http:", "https:", "blob:"}

func isCodeURL(s string) bool {
	l := strings.ToLower(strings.TrimSpace(s))
	for _, p := range codeURLSchemes {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// specInterpreterHazards reads an interpreter invocation with a spec.
func (a *analysis) specInterpreterHazards(cm command, spec *optSpec, name string, depth int, inner *outcome, info *argInfo) []hazard {
	args := cm.args[1:]
	shell := spec == posixShellSpec
	if shell { // +x, +o name: the same syntax as -x, -o name
		args = append([]word(nil), args...)
		for i, w := range args {
			if s, ok := w.text(); ok && len(s) > 1 && s[0] == '+' && s != "++" {
				args[i] = literalWord("-" + s[1:])
			}
		}
	}
	ps := spec.parse(args)
	var hz []hazard
	wordOf := func(i int) string { s, _ := cm.args[i+1].text(); return s }
	if len(ps.unknown) > 0 {
		if shell {
			return nil // the shell refuses an option it does not know, and runs nothing
		}
		for k, u := range ps.unknown {
			if strings.HasPrefix(u, "--") && strings.Contains(u, "=") {
				continue // its value is attached: it cannot swallow the script's name
			}
			hz = append(hz, hazard{"hazard: unknown option", name + " " + u + " is an option the policy does not know, so it cannot tell whether the next word is the script or the option's value (and the code may come from standard input)", []string{wordOf(ps.unknownIdx[k])}, false})
		}
		if len(hz) > 0 {
			return hz
		}
	}
	noScript, stdin := false, false
	var stdinTrigger string
	for _, o := range ps.opts {
		w := wordOf(o.index)
		info.exempt[o.index+1] = true
		if o.valueIdx >= 0 {
			info.exempt[o.valueIdx+1] = true
		}
		switch o.def.role {
		case roleInterpCode:
			hz = append(hz, hazard{"hazard: code string", name + " " + o.written + " runs code given as a string", []string{w}, false})
			noScript = true
		case roleShellCode:
			hz = append(hz, hazard{"hazard: code string", name + " " + w + " runs code given as a string", []string{w}, false})
			if ps.operand < len(args) {
				info.exempt[ps.operand+1] = true
				inner.add(a.code(cm, ps.operand+1, ps.operand+2, depth))
			}
			return hz
		case roleModule:
			switch {
			case !o.valueLit:
				hz = append(hz, hazard{"hazard: code string", name + " " + o.written + " preloads a module named only at run time, which may be code in a data: or http: URL", []string{w}, false})
			case isCodeURL(o.value):
				hz = append(hz, hazard{"hazard: code string", name + " " + o.written + " " + o.value + " runs code given in a URL", []string{w}, false})
			}
		case roleModuleStop:
			return hz // python -m M: the module's code, like a script operand
		case roleInteractive:
			stdin, stdinTrigger = true, w
		case roleLoadsConfig:
			hz = append(hz, hazard{"hazard: loader variable", name + " " + o.written + " loads a file that changes what runs (an env file can set NODE_OPTIONS, an OpenSSL configuration can load engines)", []string{w}, false})
		case roleNoScript:
			noScript = true
		}
	}
	if stdin && !shell {
		// node -i, python -i: read code from standard input (after the script, for python)
		return append(hz, a.stdinHazard(interpreters[name], name, []string{stdinTrigger}, false)...)
	}
	if ps.operand >= len(args) {
		if noScript {
			return hz
		}
		if stdin {
			return append(hz, a.stdinHazard(interpreters[name], name, []string{stdinTrigger}, false)...)
		}
		return append(hz, a.stdinHazard(interpreters[name], name, nil, true)...)
	}
	if stdin { // sh -s ARGS: the operands are arguments, the code comes from stdin
		return append(hz, a.stdinHazard(interpreters[name], name, []string{stdinTrigger}, false)...)
	}
	op := args[ps.operand]
	s, lit := op.text()
	switch {
	case !lit && op.procSubst:
		return append(hz, a.stdinHazard(interpreters[name], name, []string{cm.argSrc[ps.operand+1]}, false)...)
	case !lit:
		return hz // a script named at run time: like any script operand
	case s == "-" || stdinPaths[s] || strings.HasPrefix(s, "/dev/fd/") || strings.HasPrefix(s, "/proc/self/fd/"):
		return append(hz, a.stdinHazard(interpreters[name], name, []string{s}, false)...)
	}
	return hz
}
