// Package images builds the container images Polos sandboxes run in,
// without a registry: a root filesystem is assembled from Debian packages
// on this machine and imported into the Docker engine (ImageImport).
//
// The busybox image (BusyboxRef) is tiny and built in a second; the docker
// sandbox tests build it themselves through EnsureBusybox. The node image
// (NodeRef) is built by images/node/build.sh (debootstrap, minutes).
//
// Every image made here has a non-root user SandboxUID:SandboxGID and a
// /workspace owned by that user, which is what the docker provider expects.
package images

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"github.com/polos-run/polos/perr"
)

// Image references built here.
const (
	BusyboxRef = "polos/busybox:test"
	NodeRef    = "polos/node:20"
)

// The sandbox user every Polos image provides.
const (
	SandboxUID      = 1000
	SandboxGID      = 1000
	SandboxUserName = "polos"
	WorkspaceDir    = "/workspace"
	DefaultPath     = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// Error codes of image building.
const (
	CodeImageBuild perr.Code = "IMAGE_BUILD"
)

// ImageChanges are the Dockerfile instructions applied on import: the
// defaults a container of the image gets when the caller gives none.
func ImageChanges() []string {
	return []string{
		fmt.Sprintf("USER %d:%d", SandboxUID, SandboxGID),
		"WORKDIR " + WorkspaceDir,
		"ENV PATH=" + DefaultPath,
		`CMD ["/bin/sh"]`,
	}
}

// Exists reports whether the engine has an image with this reference.
func Exists(ctx context.Context, cli client.APIClient, ref string) (bool, error) {
	_, err := cli.ImageInspect(ctx, ref)
	if err == nil {
		return true, nil
	}
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	return false, perr.Wrap(err, CodeImageBuild, "check that the Docker engine is running and reachable (DOCKER_HOST)",
		"cannot inspect image %s", ref)
}

// Import streams a root filesystem tar into the engine as image ref, with
// ImageChanges applied. It fails if the engine reports an error in its
// progress stream, not only on HTTP errors.
func Import(ctx context.Context, cli client.APIClient, rootfs io.Reader, ref string) error {
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: rootfs, SourceName: "-"}, ref,
		image.ImportOptions{Changes: ImageChanges(), Message: "built by polos images"})
	if err != nil {
		return perr.Wrap(err, CodeImageBuild, "check the Docker engine log", "image import of %s failed", ref)
	}
	defer rc.Close()
	dec := json.NewDecoder(rc)
	for {
		var msg struct {
			Error string `json:"error"`
		}
		if err := dec.Decode(&msg); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return perr.Wrap(err, CodeImageBuild, "check the Docker engine log", "reading the import progress of %s", ref)
		}
		if msg.Error != "" {
			return perr.New(CodeImageBuild, "check that the rootfs tar is valid", "image import of %s failed: %s", ref, msg.Error)
		}
	}
}

// BusyboxRootfs writes, as a tar stream, a minimal root filesystem: the
// static busybox binary at /bin/busybox, one symlink per applet (appletPaths
// as printed by `busybox --list-full`, e.g. "usr/bin/find"), /etc/passwd and
// /etc/group with root and the sandbox user, a /workspace owned by the
// sandbox user and a world-writable sticky /tmp.
func BusyboxRootfs(w io.Writer, busybox []byte, appletPaths []string) error {
	tw := tar.NewWriter(w)
	mtime := time.Unix(0, 0)
	dir := func(name string, mode int64, uid, gid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, Uid: uid, Gid: gid, ModTime: mtime})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	home := "home/" + SandboxUserName
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "proc", "sys", "dev", "var"} {
		if err := dir(d, 0o755, 0, 0); err != nil {
			return err
		}
	}
	if err := dir("tmp", 0o1777, 0, 0); err != nil {
		return err
	}
	if err := dir(home, 0o755, SandboxUID, SandboxGID); err != nil {
		return err
	}
	if err := dir(strings.TrimPrefix(WorkspaceDir, "/"), 0o755, SandboxUID, SandboxGID); err != nil {
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/bin/sh\n%s:x:%d:%d:polos sandbox:/%s:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		SandboxUserName, SandboxUID, SandboxGID, home)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\nnogroup:x:65534:\n", SandboxUserName, SandboxGID)
	if err := file("etc/passwd", 0o644, []byte(passwd)); err != nil {
		return err
	}
	if err := file("etc/group", 0o644, []byte(group)); err != nil {
		return err
	}
	if err := file("bin/busybox", 0o755, busybox); err != nil {
		return err
	}
	for _, p := range appletPaths {
		p = strings.Trim(strings.TrimSpace(p), "/")
		if p == "" || p == "bin/busybox" || strings.Contains(p, "..") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: "/bin/busybox", Mode: 0o777, ModTime: mtime}); err != nil {
			return err
		}
	}
	return tw.Close()
}
