package ansi_test

import (
	"testing"

	"github.com/rdev-dev/rdev/services/api/internal/ansi"
)

func TestStrip(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text":                                    "plain text",
		"\x1b[31mred\x1b[0m":                            "red",
		"\x1b[1;38;5;208mbold orange\x1b[m!":            "bold orange!",
		"\x1b[2K\x1b[1Gprogress 50%":                    "progress 50%",
		"\x1b]0;window title\x07after":                  "after",
		"\x1b]8;;https://x.dev\x1b\\link\x1b]8;;\x1b\\": "link",
		"\x1bMreverse index":                            "reverse index",
		"tab\tand ünïcode kept":                         "tab\tand ünïcode kept",
		"a lone \x1b[ is cut short":                     "a lone s cut short",
	} {
		if got := ansi.Strip(in); got != want {
			t.Errorf("Strip(%q) = %q, want %q", in, got, want)
		}
	}
}
