package runner

import "github.com/rdev-dev/rdev/pkg/contracts/claudestream"

// maxSessionLine bounds the stream-json line a session recorder joins
// from partial chunks; a longer one (a huge result text) is skipped
// rather than held in memory.
const maxSessionLine = 4 << 20

// sessionRecorder reads a Claude Code job's stdout lines for its session
// (id, cost, turns, usage), joining lines split into partial chunks.
type sessionRecorder struct {
	claudestream.Recorder
	pending []byte
	over    bool
}

func (s *sessionRecorder) line(data []byte, partial bool) {
	if partial || s.pending != nil || s.over {
		if !s.over && len(s.pending)+len(data) <= maxSessionLine {
			s.pending = append(s.pending, data...)
		} else {
			s.over, s.pending = true, s.pending[:0]
		}
		if partial {
			return
		}
		data = s.pending
		s.pending = nil
		if s.over {
			s.over = false
			return
		}
	}
	s.Observe(data)
}
