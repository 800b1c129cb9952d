package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/rdev-dev/rdev/pkg/access"
	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/api/internal/ansi"
)

// Output reads jobs' output.
type Output interface {
	// Lines calls fn with each line of stream streamID in stored order,
	// and with more set when another is stored already. It returns when
	// the stream's terminal event is read; without follow, also once what
	// is stored now is read; and with fn's first error or ctx's end.
	Lines(ctx context.Context, streamID string, follow bool, fn func(l contracts.OutputLine, more bool) error) error
}

// logsOptions are the query parameters of GET /v1/jobs/{id}/logs.
type logsOptions struct {
	fd                          contracts.FD
	attempt                     int
	since                       time.Time // zero: every line
	timestamps, follow, noColor bool
}

// getLogs answers GET /v1/jobs/{id}/logs: the job's output as plain
// text, stdout and stderr interleaved as stored, each line as printed
// (exact bytes, ANSI sequences kept unless ?strip_ansi=true).
func (h *Handlers) getLogs(c echo.Context) error {
	opts, err := logsQuery(c)
	if err != nil {
		return h.fail(c, err)
	}
	ctx := c.Request().Context()
	st, err := h.jobs.Job(ctx, c.Param("id"))
	if err == nil {
		err = h.jobAccess(c, st, access.RoleRead)
	}
	if err != nil {
		return h.fail(c, err)
	}
	// A job that has ended has its terminal event stored, or (its output
	// expired) never will: following it would wait forever.
	follow := opts.follow && !st.Status.Final()
	w := c.Response()
	started := false
	var buf []byte
	// Lines go out in writes of up to 32 KiB, flushed whenever the stored
	// ones are all sent (a follower sees each line as it comes).
	send := func(flush bool) error {
		if !started {
			w.Header().Set(echo.HeaderContentType, echo.MIMETextPlainCharsetUTF8)
			w.Header().Set("X-Content-Type-Options", "nosniff")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		_, err := w.Write(buf)
		buf = buf[:0]
		if err == nil && flush {
			w.Flush()
		}
		return err
	}
	err = h.output.Lines(ctx, st.StreamID, follow, func(l contracts.OutputLine, more bool) error {
		if (opts.fd == "" || l.FD == opts.fd) && (opts.attempt == 0 || l.Attempt == opts.attempt) && !l.Time.Before(opts.since) {
			buf = appendLine(buf, l, opts)
		}
		if more && len(buf) < 32<<10 {
			return nil
		}
		return send(!more)
	})
	if err == nil && (started || len(buf) > 0) {
		err = send(false)
	}
	if started {
		if err != nil && ctx.Err() == nil {
			// The status is sent: the client sees the body end early.
			h.log.WarnContext(ctx, "logs ended early", "job_id", st.JobID, "err", err)
		}
		return nil
	}
	if err != nil {
		return h.fail(c, err)
	}
	return c.Blob(http.StatusOK, echo.MIMETextPlainCharsetUTF8, nil)
}

// appendLine appends l as text: its exact bytes, a newline unless the
// line was cut.
func appendLine(buf []byte, l contracts.OutputLine, opts logsOptions) []byte {
	if opts.timestamps {
		buf = l.Time.UTC().AppendFormat(buf, time.RFC3339Nano)
		buf = append(buf, ' ')
	}
	text := l.Text
	if l.Raw != nil {
		text = string(l.Raw)
	}
	if opts.noColor {
		text = ansi.Strip(text)
	}
	buf = append(buf, text...)
	if !l.Partial {
		buf = append(buf, '\n')
	}
	return buf
}

// logsQuery reads ?fd (stdout or stderr), attempt (from 1), since (RFC
// 3339), and the switches timestamps, follow and strip_ansi.
func logsQuery(c echo.Context) (logsOptions, error) {
	var o logsOptions
	switch fd := contracts.FD(c.QueryParam("fd")); fd {
	case "", contracts.Stdout, contracts.Stderr:
		o.fd = fd
	default:
		return o, reqErr(http.StatusBadRequest, "invalid_fd", "fd must be stdout or stderr")
	}
	if v := c.QueryParam("attempt"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return o, reqErr(http.StatusBadRequest, "invalid_attempt", "attempt must be a number from 1")
		}
		o.attempt = n
	}
	if v := c.QueryParam("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return o, reqErr(http.StatusBadRequest, "invalid_since", "since must be an RFC 3339 time, e.g. 2026-12-05T01:00:00Z")
		}
		o.since = t
	}
	for name, dst := range map[string]*bool{"timestamps": &o.timestamps, "follow": &o.follow, "strip_ansi": &o.noColor} {
		if v := c.QueryParam(name); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return o, reqErr(http.StatusBadRequest, "invalid_"+name, name+" must be true or false")
			}
			*dst = b
		}
	}
	return o, nil
}
