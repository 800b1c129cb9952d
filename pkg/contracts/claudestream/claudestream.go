// Package claudestream reads the stream-json output of Claude Code
// (`claude -p --output-format stream-json --verbose`): one JSON message per
// stdout line. The worker records a job's session from it, and the
// streamer turns it into typed SSE events. It depends on the standard
// library only, like the contracts it fills.
package claudestream

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// message is the part of a stream-json message rdev reads; readers
// ignore the rest, as Claude Code adds fields over time.
type message struct {
	Type      string `json:"type"`
	Subtype   string `json:"subtype"`
	SessionID string `json:"session_id"`
	Model     string `json:"model"`
	IsError   bool   `json:"is_error"`
	// Claude Code reports total_cost_usd; versions before 1.0 cost_usd.
	TotalCostUSD *float64               `json:"total_cost_usd"`
	CostUSD      *float64               `json:"cost_usd"`
	NumTurns     int                    `json:"num_turns"`
	DurationMS   int64                  `json:"duration_ms"`
	Result       string                 `json:"result"`
	Usage        *contracts.ClaudeUsage `json:"usage"`
	Message      *struct {
		// Content is an array of blocks, or (user messages) a string.
		Content json.RawMessage `json:"content"`
	} `json:"message"`
}

type block struct {
	Type      string          `json:"type"`
	Text      string          `json:"text"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input"`
	ToolUseID string          `json:"tool_use_id"`
	Content   json.RawMessage `json:"content"`
	IsError   bool            `json:"is_error"`
}

// parse decodes one line; ok is false for a line that is not a
// stream-json message.
func parse(line []byte) (m message, ok bool) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return m, false // most non-JSON lines end here, cheaply
	}
	if json.Unmarshal(line, &m) != nil || m.Type == "" {
		return m, false
	}
	return m, true
}

func (m message) blocks() []block {
	if m.Message == nil {
		return nil
	}
	var bs []block
	if json.Unmarshal(m.Message.Content, &bs) != nil {
		return nil
	}
	return bs
}

// Recorder gathers a session from a job's stdout lines. It is not safe for
// concurrent use.
type Recorder struct {
	s    contracts.ClaudeSession
	seen bool
}

// Observe reads one stdout line.
func (r *Recorder) Observe(line []byte) {
	m, ok := parse(line)
	if !ok {
		return
	}
	if m.SessionID != "" {
		r.s.SessionID, r.seen = m.SessionID, true
	}
	switch {
	case m.Type == "system" && m.Subtype == "init":
		r.s.Model, r.seen = m.Model, true
	case m.Type == "result":
		r.seen = true
		r.s.Result, r.s.Subtype, r.s.IsError = true, m.Subtype, m.IsError
		r.s.NumTurns, r.s.DurationMS, r.s.Usage = m.NumTurns, m.DurationMS, m.Usage
		if c := cost(m); c != nil {
			r.s.CostUSD = *c
		}
	}
}

func cost(m message) *float64 {
	if m.TotalCostUSD != nil {
		return m.TotalCostUSD
	}
	return m.CostUSD
}

// Session returns what was gathered, or nil when no stream-json message
// was seen.
func (r *Recorder) Session() *contracts.ClaudeSession {
	if !r.seen {
		return nil
	}
	s := r.s
	return &s
}

// Event is one typed SSE event decoded from a line.
type Event struct {
	// Name is one of the contracts.SSEClaude* names.
	Name string
	// Data is the matching contracts.Claude*Data value.
	Data any
}

// Events decodes the stdout line of Seq seq into typed events: an
// assistant message into its text and tool_use blocks, a user message
// into its tool_result blocks, a result message into a result. It returns
// nil for a line that yields none (not stream-json, or a message such as
// system init that has no typed event): that line stays an output event.
func Events(seq uint64, line []byte) []Event {
	m, ok := parse(line)
	if !ok {
		return nil
	}
	var evs []Event
	switch m.Type {
	case "assistant":
		for _, b := range m.blocks() {
			switch b.Type {
			case "text":
				evs = append(evs, Event{contracts.SSEClaudeAssistant, contracts.ClaudeAssistantData{Seq: seq, SessionID: m.SessionID, Text: b.Text}})
			case "tool_use":
				evs = append(evs, Event{contracts.SSEClaudeToolUse, contracts.ClaudeToolUseData{Seq: seq, SessionID: m.SessionID, ID: b.ID, Name: b.Name, Input: b.Input}})
			}
		}
	case "user":
		for _, b := range m.blocks() {
			if b.Type == "tool_result" {
				evs = append(evs, Event{contracts.SSEClaudeToolResult, contracts.ClaudeToolResultData{
					Seq: seq, SessionID: m.SessionID, ToolUseID: b.ToolUseID, Content: text(b.Content), IsError: b.IsError}})
			}
		}
	case "result":
		var r Recorder
		r.Observe(line)
		evs = append(evs, Event{contracts.SSEClaudeResult, contracts.ClaudeResultData{Seq: seq, ClaudeSession: r.s, Text: m.Result}})
	}
	return evs
}

// text is a tool result's content: a string, or text blocks joined.
func text(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var bs []block
	if json.Unmarshal(raw, &bs) != nil {
		return string(raw)
	}
	parts := make([]string, 0, len(bs))
	for _, b := range bs {
		if b.Type == "text" {
			parts = append(parts, b.Text)
		}
	}
	return strings.Join(parts, "\n")
}
