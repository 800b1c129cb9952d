package natsjs

import (
	"encoding/base64"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// appendLine appends l as JSON, the same document encoding/json produces
// for contracts.OutputLine (fields in order, omitempty honoured) but
// without reflection: it runs once per output line.
func appendLine(b []byte, l *contracts.OutputLine) []byte {
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(l.V), 10)
	b = append(b, `,"stream_id":`...)
	b = appendString(b, l.StreamID)
	b = append(b, `,"job_id":`...)
	b = appendString(b, l.JobID)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(l.Attempt), 10)
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, l.Seq, 10)
	b = append(b, `,"fd":`...)
	b = appendString(b, string(l.FD))
	b = append(b, `,"text":`...)
	b = appendString(b, l.Text)
	if len(l.Raw) > 0 {
		b = append(b, `,"raw":"`...)
		b = base64.StdEncoding.AppendEncode(b, l.Raw)
		b = append(b, '"')
	}
	if l.Partial {
		b = append(b, `,"partial":true`...)
	}
	b = append(b, `,"time":"`...)
	b = l.Time.AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s, which must be valid UTF-8, as a JSON string.
// Like encoding/json it escapes control characters, '"', '\\', '<', '>',
// '&', U+2028 and U+2029, so the output is safe inside HTML and
// JavaScript too.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
