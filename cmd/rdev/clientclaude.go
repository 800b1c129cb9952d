package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/claudestream"
)

// claudeCmd submits a prompt and follows Claude Code's session, rendered
// for people (or, with --raw, its stream-json lines).
type claudeCmd struct {
	Server       serverFlags `embed:""`
	Project      string      `short:"p" env:"RDEV_PROJECT" help:"Project to run in (default: the context's)."`
	Model        string      `help:"Claude model."`
	MaxTurns     int         `name:"max-turns" help:"Most agent turns."`
	AllowedTools []string    `name:"allowed-tools" help:"Tools Claude may use; repeat or comma separate."`
	Resume       string      `help:"Session id to resume."`
	Priority     string      `enum:",high,normal,low" default:"" help:"Priority: high, normal or low (default: the project's)."`
	Raw          bool        `help:"Print Claude Code's stream-json lines as they are."`
	Detach       bool        `short:"d" help:"Print the job id and its URLs, and do not follow."`
	Prompt       string      `arg:"" help:"What Claude is asked."`
}

func (c *claudeCmd) Run(ctx context.Context, forced forcedStop, std stdio) error {
	srv, err := c.Server.resolveProject(c.Project)
	if err != nil {
		return err
	}
	project := srv.project
	req := contracts.ClaudeRequest{Prompt: c.Prompt}
	req.Model, req.MaxTurns, req.AllowedTools, req.Resume = c.Model, c.MaxTurns, c.AllowedTools, c.Resume
	req.Priority = c.Priority
	cl := srv.client()
	sub, err := cl.SubmitClaude(ctx, project, req)
	if err != nil {
		return submitError(err)
	}
	if c.Detach {
		printDetached(std, srv, sub)
		return nil
	}
	w := jobWatch{cl: cl, std: std, jobID: sub.JobID, url: srv.streamURL + client.StreamEventsURL(sub.StreamID), cancel: true}
	if !c.Raw {
		w.render = renderClaude
	}
	return w.run(ctx, forced)
}

// renderClaude writes one stdout line of Claude Code's stream-json
// readably: assistant text as it is, each tool call and result on one
// line, the final result as a summary with cost and tokens. A line that
// is no stream-json message it reports as not rendered.
func renderClaude(std stdio, l contracts.OutputLine) bool {
	evs := claudestream.Events(l.Seq, []byte(l.Text))
	if evs == nil {
		// Messages without a typed event (system init) are not shown.
		return strings.HasPrefix(strings.TrimSpace(l.Text), `{"type":`)
	}
	for _, ev := range evs {
		switch d := ev.Data.(type) {
		case contracts.ClaudeAssistantData:
			fmt.Fprintln(std.out, d.Text)
		case contracts.ClaudeToolUseData:
			fmt.Fprintf(std.out, "→ %s %s\n", d.Name, oneLine(string(d.Input), 160))
		case contracts.ClaudeToolResultData:
			mark := "←"
			if d.IsError {
				mark = "✗"
			}
			fmt.Fprintf(std.out, "%s %s\n", mark, oneLine(d.Content, 160))
		case contracts.ClaudeResultData:
			s := fmt.Sprintf("— %s: %d turns, %.1fs, $%.4f", cmpOr(d.Subtype, "done"), d.NumTurns, float64(d.DurationMS)/1000, d.CostUSD)
			if d.Usage != nil {
				s += fmt.Sprintf(", %d tokens in, %d out", d.Usage.InputTokens+d.Usage.CacheReadInputTokens+d.Usage.CacheCreationInputTokens, d.Usage.OutputTokens)
			}
			fmt.Fprintln(std.err, s)
		}
	}
	return true
}

// oneLine folds s onto one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
