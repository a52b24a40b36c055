package e2b_test

import (
	"bytes"
	"io/fs"
	"testing"

	"github.com/polos-run/polos/sandbox"
	"github.com/polos-run/polos/sandbox/e2b/e2bfake"
)

var (
	errSkipDir = fs.SkipDir
	errSkipAll = fs.SkipAll
)

func TestFiles(t *testing.T) {
	for _, version := range []string{"", "0.5.0", "0.3.0"} {
		// "" is current envd (octet-stream upload); 0.5.0 takes multipart
		// only; 0.3.0 also has no default user (Basic auth, username=).
		t.Run("envd="+version, func(t *testing.T) {
			_, _, b := newBackend(t, e2bfake.Options{EnvdVersion: version})
			ctx := testCtx(t)
			data := append([]byte("bin\x00ary \xff\r\n"), bytes.Repeat([]byte("x"), 100_000)...)
			if err := b.WriteFile(ctx, "sub/dir/f.bin", data); err != nil {
				t.Fatalf("WriteFile: %v", err)
			}
			got, err := b.ReadFile(ctx, "/home/user/sub/dir/f.bin", 1<<20)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("ReadFile = %d bytes, %v; want %d bytes", len(got), err, len(data))
			}
			got, err = b.ReadFile(ctx, "sub/dir/f.bin", 10)
			if err != nil || len(got) != 11 {
				t.Errorf("ReadFile with max 10 = %d bytes, %v; want 11", len(got), err)
			}
			if err := b.WriteFile(ctx, "sub/dir/f.bin", []byte("short")); err != nil {
				t.Fatal(err)
			}
			if res := mustExec(t, b, sandbox.ExecRequest{Command: "cat sub/dir/f.bin"}); res.Stdout != "short" {
				t.Errorf("after overwrite the sandbox sees %q", res.Stdout)
			}
			if err := b.WriteFile(ctx, "empty", nil); err != nil {
				t.Fatal(err)
			}
			if got, err := b.ReadFile(ctx, "empty", 10); err != nil || len(got) != 0 {
				t.Errorf("empty file = %q, %v", got, err)
			}
			_, err = b.ReadFile(ctx, "missing.txt", 10)
			wantCode(t, "read a missing file", err, sandbox.CodeNotFound)
			_, err = b.ReadFile(ctx, "sub", 10)
			wantCode(t, "read a directory", err, sandbox.CodeBadRequest)
			err = b.WriteFile(ctx, "sub", []byte("x"))
			wantCode(t, "write over a directory", err, sandbox.CodeBadRequest)
			mustExec(t, b, sandbox.ExecRequest{Command: "mkfifo fifo"})
			_, err = b.ReadFile(ctx, "fifo", 10)
			wantCode(t, "read a FIFO", err, sandbox.CodeBadRequest)
			_, err = b.ReadFile(ctx, "", 10)
			wantCode(t, "read an empty path", err, sandbox.CodeBadRequest)
			_, err = b.ReadFile(ctx, "a\x00b", 10)
			wantCode(t, "read a path with NUL", err, sandbox.CodeBadRequest)
			_, err = b.ReadFile(ctx, "/etc/passwd", 10)
			wantCode(t, "read /etc/passwd", err, sandbox.CodeOutsideWorkspace)
			mustExec(t, b, sandbox.ExecRequest{Command: "ln -s loop2 loop1 && ln -s loop1 loop2"})
			_, err = b.ReadFile(ctx, "loop1", 10)
			wantCode(t, "read a symlink loop", err, sandbox.CodeBadRequest)
		})
	}
}
