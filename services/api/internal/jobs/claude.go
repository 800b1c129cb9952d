package jobs

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// The Claude Code option values the API accepts. Each is passed as one
// "--flag=value" element, so a value can never be read as a flag of its
// own, and patterns keep values to what the option means.
var (
	modelPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@/\[\]-]{0,127}$`)
	toolPattern    = regexp.MustCompile(`^[A-Za-z0-9_*][A-Za-z0-9_*:.-]{0,127}(\([^()\x00-\x1f]{0,256}\))?$`)
	sessionPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
	// PermissionModes are Claude Code's --permission-mode values.
	PermissionModes = []string{"default", "acceptEdits", "bypassPermissions", "plan", "dontAsk"}
	// OutputFormats are Claude Code's --output-format values; stream-json
	// is the default, and the only one sessions are recorded from.
	OutputFormats = []string{"stream-json", "json", "text"}
)

// The bounds of Claude options.
const (
	MaxTurns               = 1000
	maxTools               = 64
	maxSystemPromptBytes   = 32 << 10
	defaultClaudeOutFormat = "stream-json"
)

// claudeArgv builds the Claude Code argv: the configured command, the
// options as "--flag=value" elements, then "--" and the prompt, so that
// neither an option value nor the prompt is ever parsed as a flag, and no
// shell ever sees them. Control characters other than newline and tab
// are dropped from the prompt: they can drive a terminal but carry no
// meaning in a prompt.
func (l Limits) claudeArgv(prompt string, o contracts.ClaudeOptions) ([]string, error) {
	clean := sanitize(prompt)
	if strings.TrimSpace(clean) == "" {
		return nil, invalid("invalid_prompt", "prompt must contain some text")
	}
	if len(clean) > l.MaxPromptBytes {
		return nil, invalid("prompt_too_large", fmt.Sprintf("prompt is %d bytes; at most %d are allowed", len(clean), l.MaxPromptBytes))
	}
	opts, err := claudeFlags(o)
	if err != nil {
		return nil, err
	}
	at := slices.Index(l.ClaudeCommand, PromptPlaceholder)
	if at < 0 {
		at = len(l.ClaudeCommand)
	}
	argv := slices.Concat(l.ClaudeCommand[:at], l.ClaudeCommand[min(at+1, len(l.ClaudeCommand)):], opts, []string{"--", clean})
	return argv, nil
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || !unicode.IsControl(r) {
			return r
		}
		return -1
	}, s)
}

// claudeFlags validates o and returns its flags, output format first.
func claudeFlags(o contracts.ClaudeOptions) ([]string, error) {
	format := o.OutputFormat
	if format == "" {
		format = defaultClaudeOutFormat
	}
	if !slices.Contains(OutputFormats, format) {
		return nil, invalid("invalid_output_format", fmt.Sprintf("output_format must be one of %s", strings.Join(OutputFormats, ", ")))
	}
	flags := []string{"--output-format=" + format}
	if o.Model != "" {
		if !modelPattern.MatchString(o.Model) {
			return nil, invalid("invalid_model", "model must be a model name or alias (letters, digits and . _ : @ / [ ] -, at most 128)")
		}
		flags = append(flags, "--model="+o.Model)
	}
	if o.MaxTurns != 0 {
		if o.MaxTurns < 1 || o.MaxTurns > MaxTurns {
			return nil, invalid("invalid_max_turns", fmt.Sprintf("max_turns must be between 1 and %d", MaxTurns))
		}
		flags = append(flags, "--max-turns="+strconv.Itoa(o.MaxTurns))
	}
	for _, t := range []struct {
		field, flag string
		rules       []string
	}{{"allowed_tools", "--allowedTools=", o.AllowedTools}, {"disallowed_tools", "--disallowedTools=", o.DisallowedTools}} {
		if len(t.rules) > maxTools {
			return nil, invalid("invalid_tools", fmt.Sprintf("%s lists at most %d tools", t.field, maxTools))
		}
		for _, r := range t.rules {
			if !toolPattern.MatchString(r) {
				return nil, invalid("invalid_tools", fmt.Sprintf("%s: %q is not a tool name or rule such as Bash or Bash(git diff:*)", t.field, r))
			}
			flags = append(flags, t.flag+r)
		}
	}
	if o.PermissionMode != "" {
		if !slices.Contains(PermissionModes, o.PermissionMode) {
			return nil, invalid("invalid_permission_mode", fmt.Sprintf("permission_mode must be one of %s", strings.Join(PermissionModes, ", ")))
		}
		flags = append(flags, "--permission-mode="+o.PermissionMode)
	}
	if o.AppendSystemPrompt != "" {
		sp := sanitize(o.AppendSystemPrompt)
		if len(sp) > maxSystemPromptBytes {
			return nil, invalid("invalid_append_system_prompt", fmt.Sprintf("append_system_prompt is %d bytes; at most %d are allowed", len(sp), maxSystemPromptBytes))
		}
		flags = append(flags, "--append-system-prompt="+sp)
	}
	if o.Resume != "" {
		if !sessionPattern.MatchString(o.Resume) {
			return nil, invalid("invalid_resume", "resume must be a session id (the claude.session_id of an earlier job)")
		}
		flags = append(flags, "--resume="+o.Resume)
	}
	return flags, nil
}
