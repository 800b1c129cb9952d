// Package ansi removes terminal escape sequences (colours, cursor moves,
// window titles) from text, for readers that want a job's output plain.
package ansi

import "regexp"

// sequence matches the ECMA-48 escape sequences terminals act on: CSI
// (ESC [ … final byte, e.g. colours), OSC (ESC ] … BEL or ST, e.g.
// titles and hyperlinks), and the two-byte escapes (ESC and one byte in
// @–_ but [ and ]).
var sequence = regexp.MustCompile(`\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\^_]`)

// Strip returns s without its escape sequences.
func Strip(s string) string {
	if !containsESC(s) {
		return s
	}
	return sequence.ReplaceAllString(s, "")
}

func containsESC(s string) bool {
	for i := range len(s) {
		if s[i] == 0x1b {
			return true
		}
	}
	return false
}
