package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/bmatcuk/doublestar/v4"
)

// maxSymlinkHops bounds symlink resolution, as the kernel's ELOOP does.
const maxSymlinkHops = 40

// LinkReader inspects symlinks without following them. OSLinks is the host
// file system; tests and remote sandboxes may supply their own.
type LinkReader interface {
	Lstat(name string) (fs.FileInfo, error)
	Readlink(name string) (string, error)
}

// OSLinks reads symlinks on the host with os.Lstat and os.Readlink.
type OSLinks struct{}

func (OSLinks) Lstat(name string) (fs.FileInfo, error) { return os.Lstat(name) }
func (OSLinks) Readlink(name string) (string, error)   { return os.Readlink(name) }

// links returns the LinkReader a check uses (see Context.Links).
func (c *Context) links() LinkReader {
	if c.Links != nil {
		return c.Links
	}
	if c.Env.normalize() == EnvLocal {
		return OSLinks{}
	}
	return nil
}

// confinement returns the directory file operations are confined to, and
// whether they are confined at all: path_restriction when set (relative to
// the workspace), else the workspace for local; docker and e2b are confined
// by their container unless path_restriction is set.
func (p *Policy) confinement(c *Context) (root string, confined bool) {
	if r := p.cfg.PathRestriction; r != "" {
		if !filepath.IsAbs(r) {
			if c.Workspace == "" {
				return "", true
			}
			r = filepath.Join(c.Workspace, r)
		}
		return filepath.Clean(r), true
	}
	if c.Env.normalize() == EnvLocal {
		if c.Workspace == "" {
			return "", true
		}
		return filepath.Clean(c.Workspace), true
	}
	return "", false
}

// location is where a path leads.
type location struct {
	abs     string // absolute, lexically cleaned
	real    string // with symlinks followed (equal to abs without inspection)
	inside  bool
	why     string // why it is outside
	rel     string // relative to the root when lexically inside
	regular fs.FileInfo
}

// within reports whether p is root or below it (both clean and absolute).
func within(root, p string) bool {
	if root == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == root || strings.HasPrefix(p, root+"/")
}

// locate resolves path against the workspace and decides whether it stays
// inside root: lexically (`..`, absolute paths) and, when links is not nil,
// physically: a symlink in any component whose target lies outside makes the
// path outside, even if later components come back.
//
// realRoot caches the physical location of root across calls; pass a
// pointer to "" to have it computed.
func locate(path, workspace, root string, confined bool, links LinkReader, realRoot *string) location {
	var loc location
	raw := path
	if !filepath.IsAbs(raw) {
		base := workspace
		if base == "" {
			base = root
		}
		if base == "" {
			loc.abs = filepath.Clean(path)
			loc.real = loc.abs
			loc.why = "the path is relative and no workspace is set to resolve it against"
			return loc
		}
		raw = base + "/" + path
	}
	loc.abs = filepath.Clean(raw)
	loc.real = loc.abs
	if !confined {
		loc.inside = true
		return loc
	}
	if root == "" {
		loc.why = "no workspace is set, so no path can be shown to be inside it"
		return loc
	}
	if !within(root, loc.abs) {
		loc.why = fmt.Sprintf("it resolves to %s, outside %s", loc.abs, root)
		return loc
	}
	loc.rel, _ = filepath.Rel(root, loc.abs)
	if links == nil {
		loc.inside = true
		return loc
	}
	if *realRoot == "" {
		*realRoot, _, _, _ = resolvePhysical(root, nil, links, "/")
	}
	// The root itself is trusted (it may be reached through a symlink such
	// as /tmp -> /private/tmp): resolution starts at its physical location
	// when the path is spelled below it.
	start, from := raw, "/"
	if strings.HasPrefix(raw, root+"/") {
		start, from = raw[len(root)+1:], *realRoot
	}
	real, escape, fi, err := resolvePhysical(start, []string{root, *realRoot}, links, from)
	if err != "" {
		loc.why = err
		return loc
	}
	loc.real = real
	if escape != "" {
		loc.why = escape
		return loc
	}
	if !within(*realRoot, real) {
		loc.why = fmt.Sprintf("it resolves to %s through symlinks, outside %s", real, root)
		return loc
	}
	loc.inside = true
	loc.regular = fi
	return loc
}

// checkMark is pushed after the components of a symlink's target: when it is
// reached, the link has been resolved and its destination can be checked.
const checkMark = "\x00check"

// resolvePhysical follows symlinks in an uncleaned path, relative to the
// physical directory from (absolute paths restart at /), the way the kernel
// does (a `..` after a symlink climbs from the link's target).
// Components that do not exist are taken lexically. When roots are given,
// escape describes the first symlink that leads outside all of them: either
// its target as written or where it finally resolves, so a link that leaves
// and comes back still counts as leaving. fi is the Lstat of the final path
// when it exists.
func resolvePhysical(p string, roots []string, links LinkReader, from string) (real, escape string, fi fs.FileInfo, err string) {
	inside := func(x string) bool {
		for _, r := range roots {
			if within(r, x) {
				return true
			}
		}
		return false
	}
	comps := strings.Split(p, "/")
	cur := from
	if filepath.IsAbs(p) {
		cur = "/"
	}
	hops := 0
	var linkNames []string // stack of links being resolved, for the message
	missing := false
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			fi = nil
			continue
		case checkMark:
			name := linkNames[len(linkNames)-1]
			linkNames = linkNames[:len(linkNames)-1]
			if len(roots) > 0 && escape == "" && !inside(cur) {
				escape = fmt.Sprintf("%s is a symlink to %s, outside %s", name, cur, roots[0])
			}
			continue
		}
		next := filepath.Join(cur, c)
		if missing {
			cur, fi = next, nil
			continue
		}
		info, lerr := links.Lstat(next)
		if lerr != nil {
			missing = true // the rest does not exist yet: it is created where the path says
			cur, fi = next, nil
			continue
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			cur, fi = next, info
			continue
		}
		hops++
		if hops > maxSymlinkHops {
			return cur, escape, nil, fmt.Sprintf("more than %d symlinks in %s", maxSymlinkHops, p)
		}
		target, rerr := links.Readlink(next)
		if rerr != nil {
			return cur, escape, nil, fmt.Sprintf("symlink %s cannot be read: %v", next, rerr)
		}
		if len(roots) > 0 && escape == "" {
			written := target
			if !filepath.IsAbs(written) {
				written = filepath.Join(cur, written)
			}
			if !inside(filepath.Clean(written)) {
				escape = fmt.Sprintf("%s is a symlink to %s, outside %s", next, target, roots[0])
			}
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		linkNames = append(linkNames, next)
		comps = append(append(strings.Split(target, "/"), checkMark), comps...)
		fi = nil
	}
	return cur, escape, fi, ""
}

// pathRules are the compiled paths.allow/ask/deny globs.
type pathRules struct {
	allow, ask, deny []pathPattern
}

type pathPattern struct {
	glob string
	rule string
}

func compilePathRules(r PathRules) pathRules {
	mk := func(list []string, kind string) []pathPattern {
		var out []pathPattern
		for i, g := range list {
			out = append(out, pathPattern{glob: g, rule: fmt.Sprintf("paths.%s[%d] %q", kind, i, g)})
		}
		return out
	}
	return pathRules{allow: mk(r.Allow, "allow"), ask: mk(r.Ask, "ask"), deny: mk(r.Deny, "deny")}
}

// match returns the first pattern matching any of the candidate paths. An
// absolute pattern matches absolute paths; a relative one matches the path
// relative to the root (only for paths inside it).
func matchPath(list []pathPattern, root string, candidates ...string) (pathPattern, bool) {
	for _, pp := range list {
		for _, c := range candidates {
			if c == "" {
				continue
			}
			target := c
			if !filepath.IsAbs(pp.glob) {
				if root == "" || !within(root, c) {
					continue
				}
				target, _ = filepath.Rel(root, c)
			}
			if doublestar.MatchUnvalidated(pp.glob, target) {
				return pp, true
			}
		}
	}
	return pathPattern{}, false
}

// pathVerdict is the path part of a decision, shared by CheckPath and the
// redirections of CheckCommand.
type pathVerdict struct {
	loc      location
	denied   *pathPattern // paths.deny match
	asked    *pathPattern // paths.ask match
	allowed  *pathPattern // paths.allow match (on the physical path)
	hardLink int          // link count of an existing regular file, when > 1
}

// judgePath resolves path (relative ones against base) and matches the path
// rules.
func (p *Policy) judgePath(path, base, root string, confined bool, c *Context, realRoot *string) pathVerdict {
	links := c.links()
	v := pathVerdict{loc: locate(path, base, root, confined, links, realRoot)}
	matchRoot := root
	if matchRoot == "" {
		matchRoot = filepath.Clean(c.Workspace)
	}
	if pp, ok := matchPath(p.paths.deny, matchRoot, v.loc.abs, v.loc.real); ok {
		v.denied = &pp
	}
	if pp, ok := matchPath(p.paths.ask, matchRoot, v.loc.abs, v.loc.real); ok {
		v.asked = &pp
	}
	if pp, ok := matchPath(p.paths.allow, matchRoot, v.loc.real); ok {
		v.allowed = &pp
	}
	if v.loc.regular != nil && v.loc.regular.Mode().IsRegular() {
		if n := linkCount(v.loc.regular); n > 1 {
			v.hardLink = n
		}
	}
	return v
}

// CheckPath decides a file operation on path (relative to c.Workspace or
// absolute). Inside the workspace reads, globs and greps run and writes and
// edits follow file_approval / capabilities.fileWrite; outside, reads ask and
// writes are denied unless paths.allow names the path. For glob and grep the
// path may be a pattern: its directory part before the first glob character
// is checked, and a `..` after it makes it outside.
func (p *Policy) CheckPath(op Op, path string, c Context) Result {
	eff := p.effective(c.Env)
	seg := path
	switch {
	case strings.ContainsRune(path, 0):
		return p.result(DecisionDeny, []Reason{{Segment: seg, Rule: "path", Why: "the path holds a NUL byte", Decision: DecisionDeny}})
	case path == "" && (op == OpGlob || op == OpGrep):
		path = "."
	case path == "":
		return p.result(DecisionDeny, []Reason{{Segment: seg, Rule: "path", Why: "the path is empty", Decision: DecisionDeny}})
	}
	var climbs bool
	if op == OpGlob || op == OpGrep {
		if strings.ContainsAny(path, "*?[{") {
			base, rest := doublestar.SplitPattern(filepath.ToSlash(path))
			path = base
			for _, comp := range strings.Split(rest, "/") {
				if comp == ".." {
					climbs = true
				}
			}
		}
	}
	var realRoot string
	root, confined := p.confinement(&c)
	v := p.judgePath(path, c.Workspace, root, confined, &c, &realRoot)
	var reasons []Reason
	add := func(d Decision, rule, why string) {
		reasons = append(reasons, Reason{Segment: seg, Rule: rule, Why: why, Decision: d})
	}

	if v.denied != nil {
		add(DecisionDeny, v.denied.rule, "the path matches a deny rule")
	}
	if v.asked != nil {
		add(DecisionAsk, v.asked.rule, "the path matches an ask rule")
	}
	inside := v.loc.inside && !climbs
	why := v.loc.why
	if climbs {
		why = "the pattern climbs out with .. after a glob"
	}
	switch {
	case !inside && v.allowed != nil:
		if op.writes() {
			add(eff.write.decision, eff.write.rule, "outside the workspace but allowed by "+v.allowed.rule+"; writes follow the write setting")
		} else {
			add(DecisionAllow, v.allowed.rule, "outside the workspace, explicitly allowed")
		}
	case !inside && op.writes():
		add(DecisionDeny, "path_restriction", "writes outside the workspace are denied: "+why)
	case !inside:
		add(DecisionAsk, "path_restriction", string(op)+" outside the workspace asks: "+why)
	case op.writes():
		add(eff.write.decision, eff.write.rule, "writes inside the workspace follow this setting")
	default:
		add(DecisionAllow, "path_restriction", string(op)+" inside the workspace")
	}
	if op.writes() && v.hardLink > 1 && v.allowed == nil {
		add(DecisionAsk, "hazard: hard link", fmt.Sprintf("the file has %d hard links; writing it changes the other names too, which may be outside the workspace", v.hardLink))
	}
	return p.finish(reasons)
}

// CheckCapability decides a coarse capability: "fileWrite" (the write and
// edit tools: file_approval and capabilities.fileWrite, strictest wins) or
// "network" (capabilities.network; with docker it is the container's
// network mode that is decided, and mode "none" or unset always passes). A
// capability without a rule is allowed; an unknown name asks.
func (p *Policy) CheckCapability(name string, c Context) Result {
	eff := p.effective(c.Env)
	seg := "capability " + name
	switch name {
	case CapabilityFileWrite:
		return p.finish([]Reason{{Segment: seg, Rule: eff.write.rule, Why: "writes and edits follow this setting", Decision: eff.write.decision}})
	case CapabilityNetwork:
		if c.Env.normalize() == EnvDocker && dockerOffline(c.Network) {
			return p.finish([]Reason{{Segment: seg, Rule: "docker network mode", Why: "the container has no network", Decision: DecisionAllow}})
		}
		if eff.network == nil {
			return p.finish([]Reason{{Segment: seg, Rule: "capabilities.network (unset)", Why: "no network rule", Decision: DecisionAllow}})
		}
		why := "the network capability"
		if c.Env.normalize() == EnvDocker {
			why = fmt.Sprintf("the container's network mode is %q", c.Network)
		}
		return p.finish([]Reason{{Segment: seg, Rule: eff.network.rule, Why: why, Decision: eff.network.decision}})
	default:
		return p.finish([]Reason{{Segment: seg, Rule: "capabilities", Why: fmt.Sprintf("unknown capability %q (known: %s, %s)", name, CapabilityFileWrite, CapabilityNetwork), Decision: DecisionAsk}})
	}
}

// dockerOffline reports whether a docker network mode gives no network
// (this project's docker sandboxes default to "none").
func dockerOffline(mode string) bool { return mode == "" || mode == "none" }
