package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/polos-run/polos/perr"
)

func TestBusyboxRootfs(t *testing.T) {
	var buf bytes.Buffer
	applets := []string{"bin/sh", "usr/bin/find", "/sbin/init/", "", "bin/busybox", "../../etc/evil", "usr/bin/../../x"}
	if err := BusyboxRootfs(&buf, []byte("ELF"), applets); err != nil {
		t.Fatal(err)
	}
	entries := map[string]*tar.Header{}
	contents := map[string]string{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		entries[h.Name] = h
		contents[h.Name] = string(data)
	}
	for name, check := range map[string]func(h *tar.Header) bool{
		"workspace/": func(h *tar.Header) bool {
			return h.Uid == SandboxUID && h.Gid == SandboxGID && h.Typeflag == tar.TypeDir
		},
		"tmp/":        func(h *tar.Header) bool { return h.Mode == 0o1777 },
		"bin/busybox": func(h *tar.Header) bool { return h.Mode == 0o755 && contents["bin/busybox"] == "ELF" },
		"bin/sh":      func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink && h.Linkname == "/bin/busybox" },
		"usr/bin/find": func(h *tar.Header) bool {
			return h.Typeflag == tar.TypeSymlink
		},
		"sbin/init":  func(h *tar.Header) bool { return h.Typeflag == tar.TypeSymlink },
		"etc/passwd": func(*tar.Header) bool { return strings.Contains(contents["etc/passwd"], "polos:x:1000:1000:") },
		"etc/group":  func(*tar.Header) bool { return strings.Contains(contents["etc/group"], "polos:x:1000:") },
	} {
		h, ok := entries[name]
		if !ok || !check(h) {
			t.Errorf("entry %s: %+v", name, h)
		}
	}
	for name := range entries {
		if strings.Contains(name, "..") || strings.HasPrefix(name, "/") {
			t.Errorf("unsafe entry %q", name)
		}
	}
}

func TestCheckStaticRefusesDynamicBinaries(t *testing.T) {
	for _, p := range []string{"/bin/sh", "/nonexistent", "/etc/passwd"} {
		if err := checkStatic(p); perr.CodeOf(err) != CodeImageBuild {
			t.Errorf("checkStatic(%s) = %v", p, err)
		}
	}
}

func TestImageChanges(t *testing.T) {
	got := strings.Join(ImageChanges(), "\n")
	for _, want := range []string{"USER 1000:1000", "WORKDIR /workspace"} {
		if !strings.Contains(got, want) {
			t.Errorf("changes lack %q: %s", want, got)
		}
	}
}
