// Package entry is the streamer's view of one stored message of a stream: an
// output line or a lifecycle event, identified by its JetStream stream
// sequence, with its JSON kept exactly as stored.
package entry

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// Kind says what an entry is and so which SSE event carries it.
type Kind int

// The kinds of entry.
const (
	// Invalid is a message of the stream that could not be decoded. It
	// moves the cursor but is never sent.
	Invalid Kind = iota
	// Line is an OutputLine.
	Line
	// Status is a non-terminal Event.
	Status
	// Complete is the terminal Event: nothing of the stream follows it.
	Complete
	// Gap is made by the streamer, not stored: lines of the stream are
	// missing (Data is a contracts.SSEGapData, StreamSeq the entry it follows).
	Gap
)

// Entry is one stored message of a stream.
type Entry struct {
	// StreamSeq is the JetStream stream sequence of the message: the SSE
	// event id and the resume position (not a line number: that is Line).
	StreamSeq uint64
	// Kind is what the message is.
	Kind Kind
	// Line is OutputLine.Seq for a line and Event.Lines for an event: the
	// highest line number the client has once it received the entry.
	Line uint64
	// Data is the message body exactly as stored.
	Data []byte
	// Shared, on an entry a hub fans out to its clients, holds the
	// encodings made once for all of them (see Shared). It is nil on an
	// entry read for one client (a replay from storage, a gap), which that
	// client encodes itself.
	Shared *Shared
}

// ErrForeign is returned by Parse for a message of another stream.
var ErrForeign = errors.New("message belongs to another stream")

// lineHeader is the part of an OutputLine the streamer needs. Its JSON tags
// are what scanLine matches and what the encoding/json fallback decodes.
type lineHeader struct {
	V   int    `json:"v"`
	Seq uint64 `json:"seq"`
}

// Parse decodes the message stored at seq on subject as an entry of
// streamID. A message of the stream that cannot be decoded (bad JSON, or a
// version newer than contracts.Version) is returned as an Invalid entry
// together with the reason, so the caller can still move past it.
//
// Lines, nearly every message, are read by scanLine, which validates the
// JSON and picks out v and seq in one pass without decoding the rest;
// events are rare and decoded in full.
func Parse(streamID, subject string, seq uint64, data []byte) (Entry, error) {
	e := Entry{StreamSeq: seq, Data: data}
	switch {
	case isOutputOf(streamID, subject):
		l, err := scanLine(data)
		if errors.Is(err, errUnusual) {
			var full lineHeader // its own variable: &full escapes, l stays on the stack
			err = json.Unmarshal(data, &full)
			l = full
		}
		if err != nil {
			return e, fmt.Errorf("output line at %d: %w", seq, err)
		}
		if l.V > contracts.OutputLineVersion {
			return e, fmt.Errorf("output line at %d: message version %d is newer than %d", seq, l.V, contracts.OutputLineVersion)
		}
		e.Kind, e.Line = Line, l.Seq
	case isEventOf(streamID, subject):
		var ev struct {
			V     int                 `json:"v"`
			Type  contracts.EventType `json:"type"`
			Lines uint64              `json:"lines"`
		}
		if err := json.Unmarshal(data, &ev); err != nil {
			return e, fmt.Errorf("event at %d: %w", seq, err)
		}
		if err := checkVersion(ev.V); err != nil {
			return e, fmt.Errorf("event at %d: %w", seq, err)
		}
		e.Kind, e.Line = Status, ev.Lines
		if ev.Type.Terminal() {
			e.Kind = Complete
		}
	default:
		return e, ErrForeign
	}
	return e, nil
}

// checkVersion refuses messages newer than this reader, as the contract
// asks.
func checkVersion(v int) error {
	if v > contracts.Version {
		return fmt.Errorf("message version %d is newer than %d", v, contracts.Version)
	}
	return nil
}

// isOutputOf reports whether subject is contracts.SubjectOutput(<any
// project>, streamID) or contracts.SubjectOutputLegacy(streamID), without
// building those strings for every message.
func isOutputOf(streamID, subject string) bool {
	rest, ok := strings.CutPrefix(subject, contracts.SubjectOutputPrefix+".")
	if !ok {
		return false
	}
	if _, id, scoped := strings.Cut(rest, "."); scoped {
		rest = id // past the project
	}
	return rest == streamID
}

// isEventOf reports whether subject is rdev.events.<project>.<streamID>.<type>.
func isEventOf(streamID, subject string) bool {
	rest, ok := strings.CutPrefix(subject, contracts.SubjectEventsPrefix+".")
	if !ok {
		return false
	}
	_, rest, ok = strings.Cut(rest, ".") // the project
	if !ok {
		return false
	}
	id, typ, ok := strings.Cut(rest, ".")
	return ok && id == streamID && !strings.Contains(typ, ".")
}
