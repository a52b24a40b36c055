package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// LastBlock is the path of the last message block file (<n>.blk) of
// stream in the JetStream store under the data directory dir (any
// account): where a crash or a bad disk damages a stream first. The server
// must be stopped before the file is changed.
func LastBlock(t testing.TB, dir, stream string) string {
	t.Helper()
	var blocks []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".blk") && filepath.Base(filepath.Dir(filepath.Dir(p))) == stream {
			blocks = append(blocks, p)
		}
		return nil
	})
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no block files of stream %s under %s (%v)", stream, dir, err)
	}
	num := func(p string) int { n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".blk")); return n }
	sort.Slice(blocks, func(i, j int) bool { return num(blocks[i]) < num(blocks[j]) })
	return blocks[len(blocks)-1]
}

// TruncateFile cuts n bytes off the end of file p and returns its new size.
func TruncateFile(t testing.TB, p string, n int64) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	size := max(st.Size()-n, 0)
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return size
}

// FlipByte inverts the bits of the byte at offset off of file p (an
// offset < 0 counts from the end).
func FlipByte(t testing.TB, p string, off int64) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if off < 0 {
		off += int64(len(b))
	}
	if off < 0 || off >= int64(len(b)) {
		t.Fatalf("offset %d outside %s (%d bytes)", off, p, len(b))
	}
	b[off] ^= 0xff
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
