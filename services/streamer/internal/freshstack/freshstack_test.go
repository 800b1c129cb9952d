package freshstack_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/rdev-dev/rdev/services/streamer/internal/freshstack"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunWaitsForF(t *testing.T) {
	t.Parallel()
	x := 0
	freshstack.Run(func() { x = 1 })
	if x != 1 {
		t.Fatal("Run returned before f")
	}
}

func TestRunRaisesPanicsOnTheCaller(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, tc := range []struct {
		value any
		check func(any) bool
	}{
		{boom, func(p any) bool {
			err, ok := p.(error)
			return ok && errors.Is(err, boom) && strings.Contains(err.Error(), "freshstack_test")
		}},
		{"text", func(p any) bool { err, ok := p.(error); return ok && strings.HasPrefix(err.Error(), "text\n") }},
		{http.ErrAbortHandler, func(p any) bool { err, ok := p.(error); return ok && errors.Is(err, http.ErrAbortHandler) }},
	} {
		func() {
			defer func() {
				if p := recover(); !tc.check(p) {
					t.Errorf("panic(%v) came back as %#v", tc.value, p)
				}
			}()
			freshstack.Run(func() { panic(tc.value) })
			t.Errorf("panic(%v) not raised", tc.value)
		}()
	}
}
