package events

import (
	"encoding/binary"

	"github.com/polos-run/polos/perr"
)

// Shape limits of an event body. The msgpack decoder sizes slices from the
// length an array header declares before it reads a single element (its
// allocation limit is not applied to struct slices in v5.4.1), so an
// 11-byte message declaring a 2^28-element array of events made the
// process die with "fatal error: runtime: out of memory", which no recover
// catches. checkShape walks the body first, without allocating, and
// refuses shapes no Polos writer produces.
const (
	// MaxPriors bounds the events one message carries before its own
	// (docs/adr/0006: a step's completion riding on the next call; Polos
	// writes at most two).
	MaxPriors = 64
	// MaxAttrs bounds an event's attributes (Polos writes a handful).
	MaxAttrs = 1024
	// maxShapeDepth bounds nesting: event, priors, prior event, attrs,
	// error: 4 levels; anything deeper is not an event.
	maxShapeDepth = 8
)

// checkShape verifies that b holds exactly one msgpack map whose arrays,
// maps and nesting stay within the limits above, and whose every length
// fits in the bytes that are left. It runs in one pass over b, without
// recursion and without allocating more than its fixed stack.
func checkShape(b []byte) error {
	if len(b) == 0 {
		return perr.New(CodeTruncated, "the message was cut short; check the stream for corruption", "event has a header but no body")
	}
	if !isMapHeader(b[0]) {
		return perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
			"event body starts with byte 0x%02x, expected a msgpack map", b[0])
	}
	var open [maxShapeDepth]int // values still expected by each open container
	depth := 0
	i := 0
	for {
		if i >= len(b) {
			return perr.New(CodeTruncated, "the message was cut short; check the stream for corruption",
				"event body ends after %d bytes inside an unfinished value", len(b))
		}
		n, items, isMap, err := header(b, i)
		if err != nil {
			return err
		}
		if n > len(b)-i {
			return perr.New(CodeTruncated, "the message was cut short; check the stream for corruption",
				"the value at byte %d of the message needs %d bytes, %d remain", i+2, n, len(b)-i)
		}
		i += n
		if items >= 0 { // a container
			limit, kind := MaxPriors, "an array"
			if isMap {
				limit, kind = MaxAttrs, "a map"
			}
			if items > limit {
				return perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
					"the event body declares %s of %d entries; Polos events hold at most %d", kind, items, limit)
			}
			if isMap {
				items *= 2
			}
			if items > len(b)-i {
				return perr.New(CodeTruncated, "the message was cut short; check the stream for corruption",
					"the event body declares %d values in %d remaining bytes", items, len(b)-i)
			}
			if items > 0 {
				if depth == maxShapeDepth {
					return perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
						"the event body nests deeper than %d levels", maxShapeDepth)
				}
				open[depth] = items
				depth++
				continue
			}
		}
		// One value ended: close every container it completed.
		for depth > 0 {
			open[depth-1]--
			if open[depth-1] > 0 {
				break
			}
			depth--
		}
		if depth == 0 {
			break
		}
	}
	if i != len(b) {
		return perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
			"%d bytes follow the event body", len(b)-i)
	}
	return nil
}

func isMapHeader(c byte) bool { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }

// header reads the msgpack value header at b[i]. n is how many bytes the
// value occupies when it is not a container (header and payload), or the
// header's length when it is; items is the container's entry count, -1 for
// a scalar. n may point past the end of b (the caller reports truncation).
func header(b []byte, i int) (n, items int, isMap bool, err error) {
	c := b[i]
	rest := b[i+1:]
	// length-prefixed forms: the prefix must be there to read it
	need := func(k int) bool { return len(rest) >= k }
	u8 := func() int { return int(rest[0]) }
	u16 := func() int { return int(binary.BigEndian.Uint16(rest)) }
	// capped so that it stays positive where int has 32 bits; any length
	// that large exceeds every limit and every message anyway
	u32 := func() int { return int(min(binary.BigEndian.Uint32(rest), 1<<30)) }
	short := perr.New(CodeTruncated, "the message was cut short; check the stream for corruption",
		"the event body ends inside the header at byte %d", i+2)
	switch {
	case c <= 0x7f || c >= 0xe0: // fixint
		return 1, -1, false, nil
	case c&0xf0 == 0x80: // fixmap
		return 1, int(c & 0x0f), true, nil
	case c&0xf0 == 0x90: // fixarray
		return 1, int(c & 0x0f), false, nil
	case c&0xe0 == 0xa0: // fixstr
		return 1 + int(c&0x1f), -1, false, nil
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return 1, -1, false, nil
	case 0xcc, 0xd0: // uint8, int8
		return 2, -1, false, nil
	case 0xcd, 0xd1: // uint16, int16
		return 3, -1, false, nil
	case 0xca, 0xce, 0xd2: // float32, uint32, int32
		return 5, -1, false, nil
	case 0xcb, 0xcf, 0xd3: // float64, uint64, int64
		return 9, -1, false, nil
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1, 2, 4, 8, 16
		return 2 + 1<<(c-0xd4), -1, false, nil
	case 0xc4, 0xd9: // bin8, str8
		if !need(1) {
			return 0, 0, false, short
		}
		return 2 + u8(), -1, false, nil
	case 0xc5, 0xda: // bin16, str16
		if !need(2) {
			return 0, 0, false, short
		}
		return 3 + u16(), -1, false, nil
	case 0xc6, 0xdb: // bin32, str32
		if !need(4) {
			return 0, 0, false, short
		}
		return 5 + u32(), -1, false, nil
	case 0xc7: // ext8
		if !need(1) {
			return 0, 0, false, short
		}
		return 3 + u8(), -1, false, nil
	case 0xc8: // ext16
		if !need(2) {
			return 0, 0, false, short
		}
		return 4 + u16(), -1, false, nil
	case 0xc9: // ext32
		if !need(4) {
			return 0, 0, false, short
		}
		return 6 + u32(), -1, false, nil
	case 0xdc, 0xde: // array16, map16
		if !need(2) {
			return 0, 0, false, short
		}
		return 3, u16(), c == 0xde, nil
	case 0xdd, 0xdf: // array32, map32
		if !need(4) {
			return 0, 0, false, short
		}
		return 5, u32(), c == 0xdf, nil
	}
	return 0, 0, false, perr.New(CodeGarbage, "only Polos should publish on polos.<ns>.run.> subjects",
		"byte 0x%02x at %d of the event body is not a msgpack value", c, i+2)
}
