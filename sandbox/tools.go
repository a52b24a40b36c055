package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/bmatcuk/doublestar/v4"
	"github.com/polos-run/polos/perr"
)

// Limits of the shared tool code, in addition to those in sandbox.go.
const (
	MaxGrepResults      = 1000 // max_results above this is lowered to it
	MaxGrepContextLines = 20   // context_lines above this is lowered to it
	MaxGrepLineChars    = 1000 // longer matched or context lines are cut, with "..."
	binarySniffBytes    = 8 << 10
)

// DefaultSkippedDirs are directories glob and grep do not descend into, unless
// the pattern (glob) or include (grep) names them, e.g. "node_modules/**/*.js".
// They hold vendored or VCS data that floods results and costs time.
var DefaultSkippedDirs = []string{".git", "node_modules"}

// New returns the Sandbox with the six tools over b: read, write, edit, glob
// and grep are implemented here once over b's FS primitives; exec validates
// the request, applies DefaultExecTimeoutSec, runs b.Exec and shapes its
// output (ANSI codes stripped, long output cut in the middle, duration
// measured). Every provider (local, docker, e2b) builds its sandboxes with it.
func New(b Backend) Sandbox { return &tools{b: b} }

type tools struct{ b Backend }

func (t *tools) Info() Info { return t.b.Info() }

func badRequest(fix, format string, args ...any) error {
	return perr.New(CodeBadRequest, fix, format, args...)
}

// Exec runs req through the backend. A zero timeout becomes
// DefaultExecTimeoutSec before the backend sees the request.
func (t *tools) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	if strings.TrimSpace(req.Command) == "" {
		return ExecResult{}, badRequest("give the shell command to run in \"command\"", "exec needs a command, got an empty one")
	}
	if req.TimeoutSec < 0 {
		return ExecResult{}, badRequest("give a timeout in seconds, or 0 for the default", "exec timeout must not be negative, got %d", req.TimeoutSec)
	}
	if req.TimeoutSec == 0 {
		req.TimeoutSec = DefaultExecTimeoutSec
	}
	for name := range req.Env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return ExecResult{}, badRequest("use environment variable names without '=' or NUL", "exec env name %q is not a valid variable name", name)
		}
	}
	start := time.Now()
	res, err := t.b.Exec(ctx, req)
	if err != nil {
		return res, err
	}
	var cutOut, cutErr bool
	res.Stdout, cutOut = ShapeOutput(res.Stdout)
	res.Stderr, cutErr = ShapeOutput(res.Stderr)
	res.Truncated = res.Truncated || cutOut || cutErr
	res.DurationMs = time.Since(start).Milliseconds()
	return res, nil
}

// readText reads a whole text file, refusing files over MaxReadFileBytes and
// binary files (a NUL byte in the first 8 KiB, or invalid UTF-8).
func (t *tools) readText(ctx context.Context, p string) ([]byte, error) {
	data, err := t.b.ReadFile(ctx, p, MaxReadFileBytes)
	if err != nil {
		return nil, err
	}
	if len(data) > MaxReadFileBytes {
		return nil, perr.New(CodeTooLarge, "read a part of it with exec (head, tail, sed -n) or search it with grep",
			"file %s is larger than the %d MiB read cap", p, MaxReadFileBytes>>20)
	}
	if IsBinary(data) {
		return nil, perr.New(CodeBinaryFile, "inspect binary files with exec (file, xxd, hexdump)",
			"file %s is not a UTF-8 text file (it holds a NUL byte or invalid UTF-8)", p)
	}
	return data, nil
}

// IsBinary reports whether data is not text: a NUL byte in its first 8 KiB,
// or invalid UTF-8 anywhere.
func IsBinary(data []byte) bool {
	return bytes.IndexByte(data[:min(len(data), binarySniffBytes)], 0) >= 0 || !utf8.Valid(data)
}

// splitLines splits data into lines that keep their "\n"; a final newline
// does not start another line.
func splitLines(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// Read returns lines [Offset, Offset+Limit) of a text file verbatim (line
// endings kept, so the whole file reads back byte for byte).
func (t *tools) Read(ctx context.Context, req ReadRequest) (ReadResult, error) {
	if req.Path == "" {
		return ReadResult{}, badRequest("give the file to read in \"path\"", "read needs a path, got an empty one")
	}
	if req.Offset < 0 || req.Limit < 0 {
		return ReadResult{}, badRequest("offset is the 1-based first line, limit a line count; both >= 0",
			"read offset and limit must not be negative, got offset %d, limit %d", req.Offset, req.Limit)
	}
	data, err := t.readText(ctx, req.Path)
	if err != nil {
		return ReadResult{}, err
	}
	lines := splitLines(data)
	start := max(req.Offset, 1) - 1
	limit := req.Limit
	if limit == 0 {
		limit = DefaultReadLimitLines
	}
	if start > 0 && start >= len(lines) {
		return ReadResult{}, badRequest("read from an offset between 1 and the line count",
			"offset %d is past the end of %s, which has %d lines", req.Offset, req.Path, len(lines))
	}
	end := min(start+limit, len(lines))
	return ReadResult{
		Content:    string(bytes.Join(lines[start:end], nil)),
		TotalLines: len(lines),
		Truncated:  end < len(lines),
	}, nil
}

// Write creates or replaces a file, creating its parent directories.
func (t *tools) Write(ctx context.Context, req WriteRequest) (WriteResult, error) {
	if req.Path == "" {
		return WriteResult{}, badRequest("give the file to write in \"path\"", "write needs a path, got an empty one")
	}
	if len(req.Content) > MaxReadFileBytes {
		return WriteResult{}, perr.New(CodeTooLarge, "write the file in smaller parts, or generate it with exec",
			"content for %s is %d bytes, over the %d MiB cap", req.Path, len(req.Content), MaxReadFileBytes>>20)
	}
	if err := t.b.WriteFile(ctx, req.Path, []byte(req.Content)); err != nil {
		return WriteResult{}, err
	}
	return WriteResult{Path: req.Path, BytesWritten: len(req.Content)}, nil
}

// Edit replaces OldText by NewText in a text file. OldText must occur exactly
// once unless ReplaceAll; otherwise CodeEditMismatch says how often it occurs
// and the file is left untouched.
func (t *tools) Edit(ctx context.Context, req EditRequest) (EditResult, error) {
	if req.Path == "" {
		return EditResult{}, badRequest("give the file to edit in \"path\"", "edit needs a path, got an empty one")
	}
	if req.OldText == "" {
		return EditResult{}, badRequest("copy the exact text to replace into old_text; use write to create a file",
			"edit needs a non-empty old_text")
	}
	if req.OldText == req.NewText {
		return EditResult{}, badRequest("give a new_text that differs from old_text", "edit old_text and new_text are identical")
	}
	data, err := t.readText(ctx, req.Path)
	if err != nil {
		return EditResult{}, err
	}
	content := string(data)
	n := strings.Count(content, req.OldText)
	switch {
	case n == 0:
		return EditResult{}, perr.New(CodeEditMismatch, "read the file again and copy old_text exactly, whitespace and indentation included",
			"old_text occurs 0 times in %s; it must occur exactly once", req.Path)
	case n > 1 && !req.ReplaceAll:
		return EditResult{}, perr.New(CodeEditMismatch, "add surrounding lines to old_text so it is unique, or set replace_all to replace every occurrence",
			"old_text occurs %d times in %s; it must occur exactly once", n, req.Path)
	}
	out := strings.ReplaceAll(content, req.OldText, req.NewText)
	if len(out) > MaxReadFileBytes {
		return EditResult{}, perr.New(CodeTooLarge, "make a smaller change",
			"editing %s would make it %d bytes, over the %d MiB cap", req.Path, len(out), MaxReadFileBytes>>20)
	}
	if err := t.b.WriteFile(ctx, req.Path, []byte(out)); err != nil {
		return EditResult{}, err
	}
	return EditResult{Path: req.Path, Replacements: n}, nil
}

// walker walks cwd, skipping DefaultSkippedDirs unless mentioned names one,
// directories matched by ignore, and stopping when ctx ends.
type walker struct {
	b       Backend
	cwd     string
	ignore  []string
	mention string // a pattern that may name a default-skipped directory
}

func (w walker) walk(ctx context.Context, fn func(rel string) error) error {
	return w.b.Walk(ctx, w.cwd, func(rel string, isDir bool) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, ig := range w.ignore {
			if doublestar.MatchUnvalidated(ig, rel) {
				if isDir {
					return fs.SkipDir
				}
				return nil
			}
		}
		if isDir {
			name := path.Base(rel)
			if slices.Contains(DefaultSkippedDirs, name) && !strings.Contains(w.mention, name) {
				return fs.SkipDir
			}
			return nil
		}
		return fn(rel)
	})
}

// join gives the path of a walked entry as the agent can pass it to read.
func join(cwd, rel string) string {
	if cwd == "" {
		return rel
	}
	return path.Join(cwd, rel)
}

func validPattern(kind, p string) error {
	if !doublestar.ValidatePattern(p) {
		return badRequest("use a glob such as src/**/*.js ('**' crosses directories)", "%s pattern %q is not a valid glob", kind, p)
	}
	return nil
}

// Glob lists files (not directories) under Cwd whose path relative to Cwd
// matches Pattern, in lexical order, at most MaxGlobResults. An absolute
// pattern is split into its literal base (the cwd) and the rest.
func (t *tools) Glob(ctx context.Context, req GlobRequest) (GlobResult, error) {
	pattern, cwd := strings.TrimPrefix(req.Pattern, "./"), req.Cwd
	if pattern == "" {
		return GlobResult{}, badRequest("give a glob such as src/**/*.js in \"pattern\"", "glob needs a pattern, got an empty one")
	}
	if path.IsAbs(pattern) {
		cwd, pattern = doublestar.SplitPattern(pattern)
	}
	if err := validPattern("glob", pattern); err != nil {
		return GlobResult{}, err
	}
	for _, ig := range req.Ignore {
		if err := validPattern("glob ignore", ig); err != nil {
			return GlobResult{}, err
		}
	}
	res := GlobResult{Files: []string{}}
	w := walker{b: t.b, cwd: cwd, ignore: req.Ignore, mention: pattern}
	err := w.walk(ctx, func(rel string) error {
		if !doublestar.MatchUnvalidated(pattern, rel) {
			return nil
		}
		if len(res.Files) == MaxGlobResults {
			res.Truncated = true
			return fs.SkipAll
		}
		res.Files = append(res.Files, join(cwd, rel))
		return nil
	})
	if err != nil && !errors.Is(err, fs.SkipAll) {
		return GlobResult{}, err
	}
	slices.Sort(res.Files)
	return res, nil
}

// Grep searches text files under Cwd line by line with a Go regexp. Include
// filters files: a glob with a '/' matches the path relative to Cwd, one
// without (e.g. "*.go") matches the base name at any depth. Binary files,
// files over MaxReadFileBytes and files that cannot be read (e.g. a symlink
// leaving the workspace) are skipped silently.
func (t *tools) Grep(ctx context.Context, req GrepRequest) (GrepResult, error) {
	if req.Pattern == "" {
		return GrepResult{}, badRequest("give a regular expression in \"pattern\"", "grep needs a pattern, got an empty one")
	}
	re, err := regexp.Compile(req.Pattern)
	if err != nil {
		return GrepResult{}, badRequest("use Go (RE2) regular expression syntax; escape metacharacters with \\",
			"grep pattern %q is not a valid regular expression: %v", req.Pattern, err)
	}
	if req.Include != "" {
		if err := validPattern("grep include", req.Include); err != nil {
			return GrepResult{}, err
		}
	}
	if req.MaxResults < 0 || req.ContextLines < 0 {
		return GrepResult{}, badRequest("give max_results and context_lines >= 0",
			"grep max_results and context_lines must not be negative, got %d and %d", req.MaxResults, req.ContextLines)
	}
	maxResults := req.MaxResults
	if maxResults == 0 {
		maxResults = DefaultGrepMaxResults
	}
	maxResults = min(maxResults, MaxGrepResults)
	ctxLines := min(req.ContextLines, MaxGrepContextLines)
	includeBase := !strings.Contains(req.Include, "/")

	res := GrepResult{Matches: []GrepMatch{}}
	w := walker{b: t.b, cwd: req.Cwd, mention: req.Include}
	err = w.walk(ctx, func(rel string) error {
		if req.Include != "" {
			name := rel
			if includeBase {
				name = path.Base(rel)
			}
			if !doublestar.MatchUnvalidated(req.Include, name) {
				return nil
			}
		}
		p := join(req.Cwd, rel)
		data, err := t.readText(ctx, p)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		lines := splitLines(data)
		for i, line := range lines {
			if !re.Match(bytes.TrimRight(line, "\r\n")) {
				continue
			}
			if len(res.Matches) == maxResults {
				res.Truncated = true
				return fs.SkipAll
			}
			m := GrepMatch{Path: p, Line: i + 1, Text: trimLine(line)}
			for _, l := range lines[max(0, i-ctxLines):i] {
				m.Before = append(m.Before, trimLine(l))
			}
			for _, l := range lines[i+1 : min(len(lines), i+1+ctxLines)] {
				m.After = append(m.After, trimLine(l))
			}
			res.Matches = append(res.Matches, m)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.SkipAll) {
		return GrepResult{}, err
	}
	return res, nil
}

// trimLine drops the line ending and cuts lines over MaxGrepLineChars.
func trimLine(line []byte) string {
	s := strings.TrimSuffix(strings.TrimSuffix(string(line), "\n"), "\r")
	if utf8.RuneCountInString(s) > MaxGrepLineChars {
		s = prefixChars(s, MaxGrepLineChars) + "..."
	}
	return s
}
