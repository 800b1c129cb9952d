package contracts

import "encoding/json"

// ClaudeOptions are the Claude Code options of a KindClaude job. The API
// validates each and turns it into one "--flag=value" argv element of
// the job's Command, before "--" and the prompt, so no value can be read
// as another flag and the prompt never as an option.
type ClaudeOptions struct {
	// Model is passed as --model (an alias such as "sonnet" or a full name).
	Model string `json:"model,omitempty"`
	// MaxTurns is passed as --max-turns; 0 leaves Claude Code's default.
	MaxTurns int `json:"max_turns,omitempty"`
	// AllowedTools and DisallowedTools are passed as --allowedTools and
	// --disallowedTools (tool names or rules such as "Bash(git diff:*)").
	AllowedTools    []string `json:"allowed_tools,omitempty"`
	DisallowedTools []string `json:"disallowed_tools,omitempty"`
	// PermissionMode is passed as --permission-mode: default,
	// acceptEdits, bypassPermissions, plan or dontAsk.
	PermissionMode string `json:"permission_mode,omitempty"`
	// AppendSystemPrompt is passed as --append-system-prompt.
	AppendSystemPrompt string `json:"append_system_prompt,omitempty"`
	// OutputFormat is passed as --output-format: stream-json (the
	// default: sessions and ?format=claude need it), json or text.
	OutputFormat string `json:"output_format,omitempty"`
	// Resume is the session id passed as --resume, to continue that
	// conversation.
	Resume string `json:"resume,omitempty"`
	// ContinueJob is the job whose session was resumed, when the caller
	// named a job rather than a session.
	ContinueJob string `json:"continue_job,omitempty"`
}

// ClaudeSession is what a Claude Code job reported about its session in
// its stream-json output (the "system" init and "result" messages); the
// worker records it on the job's state (JobState.Claude).
type ClaudeSession struct {
	// SessionID continues the conversation: submit with "resume".
	SessionID string `json:"session_id,omitempty"`
	// Model is the model the session ran on (from the init message).
	Model string `json:"model,omitempty"`
	// Subtype is the result's subtype: success, error_max_turns, ….
	Subtype string `json:"subtype,omitempty"`
	// IsError is the result's is_error.
	IsError bool `json:"is_error"`
	// CostUSD is the result's total cost in US dollars.
	CostUSD float64 `json:"cost_usd"`
	// NumTurns is the result's number of turns.
	NumTurns int `json:"num_turns"`
	// DurationMS is the result's duration in milliseconds.
	DurationMS int64 `json:"duration_ms,omitempty"`
	// Usage is the result's token usage.
	Usage *ClaudeUsage `json:"usage,omitempty"`
	// Result is false until a result message was seen (the run ended
	// early, or printed no stream-json).
	Result bool `json:"result"`
}

// ClaudeUsage counts a session's tokens.
type ClaudeUsage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	CacheReadInputTokens     int64 `json:"cache_read_input_tokens"`
}

// Server-Sent Event names of GET /v1/streams/{id}/events?format=claude:
// stdout lines of Claude Code's stream-json decoded into these (each
// carries the Seq of its line); lines that are not stream-json stay
// SSEOutput. The stored lines remain the source of truth.
const (
	// SSEClaudeAssistant carries a ClaudeAssistantData: text the model wrote.
	SSEClaudeAssistant = "assistant"
	// SSEClaudeToolUse carries a ClaudeToolUseData: a tool call.
	SSEClaudeToolUse = "tool_use"
	// SSEClaudeToolResult carries a ClaudeToolResultData: a tool's answer.
	SSEClaudeToolResult = "tool_result"
	// SSEClaudeResult carries a ClaudeSession with Result set: the end of
	// the session's run.
	SSEClaudeResult = "result"
)

// ClaudeAssistantData is the data of an assistant event.
type ClaudeAssistantData struct {
	Seq       uint64 `json:"seq"`
	SessionID string `json:"session_id,omitempty"`
	Text      string `json:"text"`
}

// ClaudeToolUseData is the data of a tool_use event.
type ClaudeToolUseData struct {
	Seq       uint64          `json:"seq"`
	SessionID string          `json:"session_id,omitempty"`
	ID        string          `json:"id"`
	Name      string          `json:"name"`
	Input     json.RawMessage `json:"input,omitempty"`
}

// ClaudeToolResultData is the data of a tool_result event.
type ClaudeToolResultData struct {
	Seq       uint64 `json:"seq"`
	SessionID string `json:"session_id,omitempty"`
	ToolUseID string `json:"tool_use_id"`
	// Content is the result's text (text blocks joined).
	Content string `json:"content"`
	IsError bool   `json:"is_error"`
}

// ClaudeResultData is the data of a result event.
type ClaudeResultData struct {
	Seq uint64 `json:"seq"`
	ClaudeSession
	// Text is the session's final answer.
	Text string `json:"text,omitempty"`
}
