package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// Every relative link in README.md and docs/*.md names a file or directory
// that exists and, with a #fragment into a Markdown page, one of its
// headings: a page moved or a heading renamed breaks the test, not the
// reader's click.
func TestDocsLinksResolve(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append(pages, filepath.Join(root, "README.md"))
	checked := 0
	for _, page := range pages {
		text, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range markdownLinks(string(text)) {
			checked++
			if err := resolveDocLink(page, link); err != nil {
				rel, _ := filepath.Rel(root, page)
				t.Errorf("%s: link %q: %v", rel, link, err)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("found only %d links in %d pages: is the link pattern still right?", checked, len(pages))
	}
}

// resolveDocLink checks one link target of page; absolute URLs are not
// followed.
func resolveDocLink(page, link string) error {
	if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
		return nil
	}
	path, fragment, _ := strings.Cut(link, "#")
	target := page
	if path != "" {
		target = filepath.Join(filepath.Dir(page), filepath.FromSlash(path))
	}
	if _, err := os.Stat(target); err != nil {
		return fmt.Errorf("no such file: %w", err)
	}
	if fragment == "" || !strings.HasSuffix(target, ".md") {
		return nil
	}
	text, err := os.ReadFile(target)
	if err != nil {
		return err
	}
	if !slices.Contains(markdownAnchors(string(text)), fragment) {
		return fmt.Errorf("no heading with anchor #%s in %s", fragment, filepath.Base(target))
	}
	return nil
}

var (
	markdownLinkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	markdownCodeRE = regexp.MustCompile("`[^`\n]*`")
)

// markdownLinks returns the targets of [text](target) links outside code.
func markdownLinks(text string) []string {
	var links []string
	for _, line := range markdownProse(text) {
		line = markdownCodeRE.ReplaceAllString(line, "")
		for _, m := range markdownLinkRE.FindAllStringSubmatch(line, -1) {
			links = append(links, m[1])
		}
	}
	return links
}

// markdownAnchors returns the anchors GitHub gives the page's headings: a
// repeated heading gets -1, -2 … appended.
func markdownAnchors(text string) []string {
	var anchors []string
	seen := map[string]int{}
	for _, line := range markdownProse(text) {
		heading, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		a := githubSlug(heading)
		if n := seen[a]; n > 0 {
			anchors = append(anchors, fmt.Sprintf("%s-%d", a, n))
		} else {
			anchors = append(anchors, a)
		}
		seen[a]++
	}
	return anchors
}

// githubSlug is GitHub's heading anchor: lower case, letters, digits, '-'
// and '_' kept, spaces turned into '-', everything else dropped.
func githubSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// markdownProse returns the page's lines outside fenced code blocks.
func markdownProse(text string) []string {
	var lines []string
	fenced := false
	for line := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			lines = append(lines, line)
		}
	}
	return lines
}

func TestDocsLinkChecker(t *testing.T) {
	t.Parallel()
	page := "# Top\n\n## Cancel, retries — and `dead letters`\n\n## Top\n\n```\n[not](a-link.md)\n```\n" +
		"See [one](other.md#x), `[code](skipped.md)` and [two](#top-1).\n"
	if got, want := markdownLinks(page), []string{"other.md#x", "#top-1"}; !slices.Equal(got, want) {
		t.Errorf("links %q, want %q", got, want)
	}
	if got, want := markdownAnchors(page), []string{"top", "cancel-retries--and-dead-letters", "top-1"}; !slices.Equal(got, want) {
		t.Errorf("anchors %q, want %q", got, want)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.md"), []byte(page), 0o600); err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(dir, "a.md")
	for link, ok := range map[string]bool{
		"a.md": true, "a.md#top-1": true, "#cancel-retries--and-dead-letters": true, "https://example.com/x": true,
		"b.md": false, "a.md#nowhere": false, "#top-2": false,
	} {
		if err := resolveDocLink(from, link); (err == nil) != ok {
			t.Errorf("%q: err %v, want ok=%v", link, err, ok)
		}
	}
}
