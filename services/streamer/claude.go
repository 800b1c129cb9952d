package streamer

import (
	"encoding/json"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access/accesshttp"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/pkg/contracts/claudestream"
	"github.com/rdev-dev/rdev/services/streamer/internal/entry"
	"github.com/rdev-dev/rdev/services/streamer/internal/follow"
	"github.com/rdev-dev/rdev/services/streamer/internal/sse"
)

// The ?format= values of a job's event stream.
const (
	formatRaw    = ""
	formatClaude = "claude"
)

// checkFormat refuses a ?format= the streamer does not know: it answers
// the request and reports false.
func checkFormat(c echo.Context) (bool, error) {
	switch c.QueryParam("format") {
	case formatRaw, "raw", formatClaude:
		return true, nil
	}
	return false, accesshttp.WriteError(c, http.StatusBadRequest, "invalid_format", `format must be "raw" (the default) or "claude"`)
}

// sinkFor is the sink of the format the request asked for.
func sinkFor(c echo.Context, k sink) follow.Sink {
	if c.QueryParam("format") == formatClaude {
		return claudeSink{k}
	}
	return k
}

// claudeSink sends stdout lines of Claude Code's stream-json as typed
// events (assistant, tool_use, tool_result, result); every other line
// stays an output event. The events of one line share its id, so a
// resume goes on after the whole line.
type claudeSink struct{ sink }

// Send writes e. A live line is decoded and encoded once for every client
// of the stream asking for this format (its entry.Shared slot
// encodingClaude), not once per client.
func (k claudeSink) Send(e entry.Entry) error {
	if e.Kind != entry.Line {
		return k.sink.Send(e)
	}
	if e.Shared != nil {
		return wrapWrite(k.w.Frame(e.Shared.Encoding(encodingClaude, e, encodeClaude)))
	}
	return wrapWrite(k.w.Frame(encodeClaude(e)))
}

// encodeClaude returns the SSE frames of line e in the claude format: its
// typed events, or its output event when it is not a line of Claude's
// stream-json.
func encodeClaude(e entry.Entry) []byte {
	var l contracts.OutputLine
	if json.Unmarshal(e.Data, &l) != nil || l.FD != contracts.Stdout || l.Partial {
		return encodeRaw(e)
	}
	evs := claudestream.Events(l.Seq, []byte(l.Text))
	if len(evs) == 0 {
		return encodeRaw(e)
	}
	var b []byte
	for _, ev := range evs {
		data, err := json.Marshal(ev.Data)
		if err != nil {
			return encodeRaw(e)
		}
		b = sse.AppendEvent(b, e.StreamSeq, ev.Name, data)
	}
	return b
}
