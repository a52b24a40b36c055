//go:build !unix

package policy

import "io/fs"

// linkCount returns 0: hard links are not inspected on this platform.
func linkCount(fs.FileInfo) int { return 0 }
