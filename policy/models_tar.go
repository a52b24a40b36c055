package policy

import "strings"

// tarModes are tar's operation modes (-c -x ...); write says whether the
// archive (-f) is written.
var tarModes = map[string]struct{ write, extract bool }{
	"A": {true, false}, "catenate": {true, false}, "concatenate": {true, false},
	"c": {true, false}, "create": {true, false}, "d": {}, "diff": {}, "compare": {},
	"delete": {true, false}, "r": {true, false}, "append": {true, false}, "t": {}, "list": {},
	"test-label": {}, "u": {true, false}, "update": {true, false},
	"x": {false, true}, "extract": {false, true}, "get": {false, true},
}

var tarSpec = compileSpec(optSpec{permute: true, defs: func() []optDef {
	d := []optDef{
		flag('A', "catenate", "concatenate"), flag('c', "create"), flag('d', "diff", "compare"),
		flag(0, "delete"), flag('r', "append"), flag('t', "list"), flag(0, "test-label"),
		flag('u', "update"), flag('x', "extract", "get"),
		value('f', "file"), value('C', "directory"), value('I', "use-compress-program").as(roleInterpCode),
		value('F', "info-script", "new-volume-script").as(roleInterpCode),
		value(0, "to-command", "rsh-command", "rmt-command").as(roleInterpCode),
		value(0, "checkpoint-action").as(roleShellCode),
		value('g', "listed-incremental").as(roleWrite), value(0, "index-file", "volno-file").as(roleWrite),
		value('T', "files-from").as(roleRead), value('X', "exclude-from").as(roleRead),
		flag('P', "absolute-names").as(roleNoCommand),
		value('b', "blocking-factor"), value('H', "format"), value('K', "starting-file"),
		value('L', "tape-length"), value('N', "newer", "after-date"), value('V', "label"),
		optional(0, "atime-preserve", "backup", "checkpoint", "occurrence", "one-top-level", "totals"),
		flag('h', "dereference"), flag('?'),
	}
	for _, v := range strings.Fields(`add-file exclude exclude-ignore exclude-ignore-recursive exclude-tag
		exclude-tag-all exclude-tag-under group group-map hole-detection level mode mtime newer-mtime
		no-quote-chars owner owner-map pax-option quote-chars quoting-style record-size sort
		sparse-version strip-components suffix transform xform warning xattrs-exclude xattrs-include`) {
		d = append(d, value(0, v))
	}
	for _, f := range strings.Fields(`a:auto-compress B:read-full-records G:incremental i:ignore-zeros
		j:bzip2 J:xz k:keep-old-files l:check-links m:touch M:multi-volume n:seek O:to-stdout
		o:old-archive p:preserve-permissions R:block-number s:preserve-order S:sparse U:unlink-first
		v:verbose w:interactive W:verify z:gzip Z:compress :acls :anchored :block-number
		:check-device :clamp-mtime :delay-directory-restore :exclude-backups :exclude-caches
		:exclude-caches-all :exclude-caches-under :exclude-vcs :exclude-vcs-ignores :force-local
		:full-time :gunzip :ungzip :uncompress :hard-dereference :ignore-case :ignore-command-error
		:ignore-failed-read :keep-directory-symlink :keep-newer-files :lzip :lzma :lzop :no-acls
		:no-anchored :no-auto-compress :no-check-device :no-delay-directory-restore :no-ignore-case
		:no-ignore-command-error :no-null :no-overwrite-dir :no-recursion :no-same-owner
		:no-same-permissions :no-seek :no-selinux :no-unquote :no-verbatim-files-from :no-wildcards
		:no-wildcards-match-slash :no-xattrs :null :numeric-owner :old-arch :one-file-system
		:overwrite :overwrite-dir :portability :posix :preserve :recursion :recursive-unlink
		:remove-files :restrict :same-order :same-owner :same-permissions :confirmation
		:show-defaults :show-omitted-dirs :show-snapshot-field-ranges :show-stored-names
		:show-transformed-names :skip-old-files :sparse :unquote :usage :utc :verbatim-files-from
		:wildcards :wildcards-match-slash :xattrs :zstd :selinux :dereference :help :version`) {
		s, l, _ := strings.Cut(f, ":")
		var short byte
		if s != "" {
			short = s[0]
		}
		d = append(d, flag(short, l))
	}
	return d
}()})

func (a *analysis) tarModel(cm command, info *argInfo) []hazard {
	args := cm.args[1:]
	origLen, oldStyle := len(cm.args), false
	// Old style: the first word holds letters without a dash (tar xzf a.tgz);
	// each letter that takes a value takes the next word in turn.
	if len(args) > 0 {
		if s, ok := args[0].text(); ok && s != "" && !strings.HasPrefix(s, "-") && strings.Trim(s, "AcdrtuxfCIFgTXPbHKLNVaBGijJklmMnOopRsSUvwWzZh") == "" {
			rewritten := []word{literalWord("-" + s[:1])}
			rest := args[1:]
			for _, c := range s[1:] {
				rewritten = append(rewritten, literalWord("-"+string(c)))
				if d := tarSpec.short[byte(c)]; d != nil && d.kind == optValue && len(rest) > 0 {
					rewritten = append(rewritten, rest[0])
					rest = rest[1:]
				}
			}
			srcs := make([]string, len(rewritten))
			for i, w := range rewritten {
				srcs[i] = string(w.toks)
			}
			consumed := len(args) - len(rest)
			cm.args = append(append([]word{cm.args[0]}, rewritten...), rest...)
			cm.argSrc = append(append([]string{cm.argSrc[0]}, srcs...), cm.argSrc[1+consumed:]...)
			args = cm.args[1:]
			// the rewritten words are not those of the command: record
			// uses against the new shape, and check its operands here
			*info = *newArgInfo(len(cm.args))
			oldStyle = true
		}
	}
	ps := tarSpec.parse(args)
	hz := unknownOptionHazards("tar", ps)
	writeArchive, extract, absolute := false, false, false
	var archive, dir *parsedOpt
	for k := range ps.opts {
		o := &ps.opts[k]
		name := strings.TrimLeft(o.written, "-")
		if m, ok := tarModes[name]; ok {
			writeArchive = writeArchive || m.write
			extract = extract || m.extract
		}
		if o.def.short != 0 {
			if m, ok := tarModes[string(o.def.short)]; ok {
				writeArchive = writeArchive || m.write
				extract = extract || m.extract
			}
		}
		w, _ := cm.args[o.index+1].text()
		switch {
		case o.def.role == roleInterpCode:
			info.exempt[o.index+1] = true
			if o.valueIdx >= 0 {
				info.exempt[o.valueIdx+1] = true
			}
			hz = append(hz, hazard{"hazard: tar runs code", "tar " + o.written + " runs the program " + quoteValue(o) + "", []string{w}, false})
		case o.def.role == roleShellCode: // --checkpoint-action=exec=CMD
			if !o.valueLit || strings.Contains(o.value, "exec") {
				hz = append(hz, hazard{"hazard: tar runs code", "tar " + o.written + "=" + o.value + " runs a command at each checkpoint", []string{w}, false})
			}
		case o.def.role == roleWrite:
			info.useValue(cm, *o, true, "tar "+o.written)
		case o.def.role == roleRead:
			info.useValue(cm, *o, false, "tar "+o.written)
		case o.def.role == roleNoCommand:
			absolute = true
		case o.def.short == 'f':
			archive = o
		case o.def.short == 'C':
			dir = o
		}
	}
	if archive != nil {
		if s := archive.value; archive.valueLit && s != "-" {
			if c := strings.IndexByte(s, ':'); c > 0 && !strings.Contains(s[:c], "/") {
				hz = append(hz, hazard{"hazard: tar runs code", "tar -f " + s + " names a remote archive, which tar reaches by running rsh", nil, false})
			}
		}
		if !(archive.valueLit && archive.value == "-") {
			info.useValue(cm, *archive, writeArchive, "tar -f (the archive)")
		}
	}
	if extract {
		if dir != nil {
			info.useValue(cm, *dir, true, "tar -x (extracts into this directory)")
		} else {
			info.uses = append(info.uses, fileUse{w: literalWord("."), src: ".", write: true, what: "tar -x (extracts into the current directory)"})
		}
		if absolute {
			hz = append(hz, hazard{"hazard: tar writes anywhere", "tar -x with -P (--absolute-names) writes to the absolute paths the archive holds", nil, false})
		}
	} else if dir != nil {
		info.useValue(cm, *dir, false, "tar -C")
	}
	if oldStyle {
		for _, k := range ps.operands {
			info.use(cm, k+1, false, "tar (member)")
		}
		uses := info.uses
		*info = *newArgInfo(origLen)
		info.exemptFrom(1)
		info.uses = uses
	}
	return hz
}
