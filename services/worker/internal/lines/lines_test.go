package lines_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/rdev-dev/rdev/pkg/contracts"
	"github.com/rdev-dev/rdev/services/worker/internal/lines"
)

// line is a Line with its data copied, comparable in tests.
type line struct {
	Data    string
	Partial bool
}

func (l line) String() string { return fmt.Sprintf("%q/%v", l.Data, l.Partial) }

// collect writes the chunks of input in order to a new Writer and closes it,
// returning the lines emitted.
func collect(t *testing.T, limit int, chunks [][]byte) []line {
	t.Helper()
	var got []line
	w := lines.NewWriter(contracts.Stderr, limit, func(l lines.Line) error {
		if l.FD != contracts.Stderr {
			t.Errorf("FD = %q, want stderr", l.FD)
		}
		got = append(got, line{string(l.Data), l.Partial})
		return nil
	})
	for _, c := range chunks {
		if n, err := w.Write(c); n != len(c) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return got
}

// splits returns input cut at the write boundaries worth trying: whole,
// byte at a time, and a few random cuts.
func splits(input string, rnd *rand.Rand) map[string][][]byte {
	out := map[string][][]byte{"whole": {[]byte(input)}}
	var bytewise [][]byte
	for i := range len(input) {
		bytewise = append(bytewise, []byte{input[i]})
	}
	out["bytewise"] = bytewise
	for r := range 5 {
		var cuts [][]byte
		for rest := input; len(rest) > 0; {
			k := 1 + rnd.IntN(len(rest))
			cuts = append(cuts, []byte(rest[:k]))
			rest = rest[k:]
		}
		out[fmt.Sprintf("random%d", r)] = cuts
	}
	return out
}

func TestWriterSplitsLines(t *testing.T) {
	t.Parallel()
	full := func(s string) line { return line{s, false} }
	part := func(s string) line { return line{s, true} }
	for _, tc := range []struct {
		name  string
		max   int
		input string
		want  []line
	}{
		{"empty", 4, "", nil},
		{"one line", 8, "hello\n", []line{full("hello")}},
		{"two lines", 8, "a\nbc\n", []line{full("a"), full("bc")}},
		{"empty lines", 8, "\n\na\n\n", []line{full(""), full(""), full("a"), full("")}},
		{"trailing partial", 8, "a\nbc", []line{full("a"), part("bc")}},
		{"only partial", 8, "abc", []line{part("abc")}},
		{"crlf stripped", 8, "a\r\nb\r\n", []line{full("a"), full("b")}},
		{"crlf empty line", 8, "\r\n", []line{full("")}},
		{"only one cr stripped", 8, "a\r\r\n", []line{full("a\r")}},
		{"lone cr kept", 8, "a\rb\n", []line{full("a\rb")}},
		{"trailing cr kept", 8, "a\r", []line{part("a\r")}},
		{"exactly max", 4, "abcd\n", []line{full("abcd")}},
		{"max plus one", 4, "abcde\n", []line{part("abcd"), full("e")}},
		{"twice max", 4, "abcdefgh\n", []line{part("abcd"), full("efgh")}},
		{"long line", 3, "abcdefghij\nk\n", []line{part("abc"), part("def"), part("ghi"), full("j"), full("k")}},
		{"max with crlf", 4, "abcd\r\nx\n", []line{full("abcd"), full("x")}},
		{"max with cr data", 4, "abcd\rx\n", []line{part("abcd"), full("\rx")}},
		{"max with cr cr lf", 4, "abcd\r\r\n", []line{part("abcd"), full("\r")}},
		{"max with trailing cr", 4, "abcd\r", []line{part("abcd"), part("\r")}},
		{"long unterminated", 4, "abcdefghij", []line{part("abcd"), part("efgh"), part("ij")}},
		{"unterminated twice max", 4, "abcdefgh", []line{part("abcd"), part("efgh")}},
		{"max one", 1, "ab\n\nc", []line{part("a"), full("b"), full(""), part("c")}},
		{"max one crlf", 1, "a\r\n\r\r\n", []line{full("a"), full("\r")}},
		{"binary", 8, "\x00\xff\x80\n", []line{full("\x00\xff\x80")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rnd := rand.New(rand.NewPCG(uint64(len(tc.input)), uint64(tc.max)))
			for how, chunks := range splits(tc.input, rnd) {
				got := collect(t, tc.max, chunks)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s: got %v, want %v", how, got, tc.want)
				}
			}
		})
	}
}

func TestWriterReturnsEmitError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	var got []string
	w := lines.NewWriter(contracts.Stdout, 16, func(l lines.Line) error {
		got = append(got, string(l.Data))
		if len(got) == 2 {
			return boom
		}
		return nil
	})
	n, err := w.Write([]byte("one\ntwo\nthree\n"))
	if !errors.Is(err, boom) || n != len("one\n") {
		t.Fatalf("Write = %d, %v; want %d, boom", n, err, len("one\n"))
	}
	if _, err := w.Write([]byte("four\n")); !errors.Is(err, boom) {
		t.Fatalf("Write after failure = %v, want boom", err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close after failure = %v, want boom", err)
	}
	if !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("emitted %q, want one and two only", got)
	}
}

func TestWriterCloseEmitError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	w := lines.NewWriter(contracts.Stdout, 16, func(lines.Line) error { return boom })
	if _, err := w.Write([]byte("no newline")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want boom", err)
	}
}

func TestWriterRefusesWriteAfterClose(t *testing.T) {
	t.Parallel()
	w := lines.NewWriter(contracts.Stdout, 16, func(lines.Line) error { return nil })
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x\n")); err == nil {
		t.Fatal("Write after Close: want an error")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
}

func TestWriterDoesNotAllocatePerLine(t *testing.T) {
	// Not parallel: AllocsPerRun counts every goroutine's allocations.
	var n int
	w := lines.NewWriter(contracts.Stdout, 64, func(l lines.Line) error {
		n += len(l.Data)
		return nil
	})
	// Lines cut across writes, lines inside one write, and a long line, so
	// every path of the Writer runs.
	chunks := [][]byte{
		[]byte("first half of a line, "),
		[]byte("second half\nwhole line\nanother whole line\nstart of next "),
		[]byte(strings.Repeat("long ", 40) + "\n"),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range chunks {
			if _, err := w.Write(c); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func TestNewWriterPanicsOnBadMax(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Fatal("want a panic")
		}
	}()
	lines.NewWriter(contracts.Stdout, 0, func(lines.Line) error { return nil })
}

// FuzzWriter checks the package's invariants on arbitrary output, cut at
// arbitrary write boundaries: the lines join back to the input (with "\r\n"
// read as "\n"), chunks respect max, and the lines do not depend on how the
// output was cut into writes.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("hello\nworld\n"), uint8(4), uint64(1))
	f.Add([]byte("a\r\n\r\r\nbcdefgh\r"), uint8(1), uint64(2))
	f.Add([]byte("abcd\rabcd\r\nabcd"), uint8(4), uint64(3))
	f.Add([]byte{0, 0xff, '\n', '\r'}, uint8(2), uint64(4))
	f.Fuzz(func(t *testing.T, input []byte, maxByte uint8, seed uint64) {
		limit := int(maxByte%32) + 1
		rnd := rand.New(rand.NewPCG(seed, seed>>32))
		var chunks [][]byte
		for rest := input; len(rest) > 0; {
			k := 1 + rnd.IntN(len(rest))
			chunks = append(chunks, rest[:k])
			rest = rest[k:]
		}
		got := collect(t, limit, chunks)

		var joined []byte
		for i, l := range got {
			if strings.Contains(l.Data, "\n") {
				t.Fatalf("line %d %v contains a newline", i, l)
			}
			if len(l.Data) > limit {
				t.Fatalf("line %d %v longer than limit %d", i, l, limit)
			}
			last := i == len(got)-1
			if l.Partial && !last && len(l.Data) != limit {
				t.Fatalf("partial line %d %v is not a full chunk of %d", i, l, limit)
			}
			if l.Partial && last && len(l.Data) == 0 {
				t.Fatalf("empty trailing partial line")
			}
			joined = append(joined, l.Data...)
			if !l.Partial {
				joined = append(joined, '\n')
			}
		}
		want := bytes.ReplaceAll(input, []byte("\r\n"), []byte("\n"))
		if !bytes.Equal(joined, want) {
			t.Fatalf("joined lines %q, want %q", joined, want)
		}
		if whole := collect(t, limit, [][]byte{input}); !slices.Equal(got, whole) {
			t.Fatalf("lines depend on write boundaries:\n cut   %v\n whole %v", got, whole)
		}
	})
}

func BenchmarkWriter(b *testing.B) {
	// Typical build output: lines of 40 to 120 bytes, read in 32 KiB chunks,
	// with the occasional line longer than MaxLineBytes.
	rnd := rand.New(rand.NewPCG(1, 2))
	var out bytes.Buffer
	for out.Len() < 4<<20 {
		n := 40 + rnd.IntN(80)
		if rnd.IntN(1000) == 0 {
			n = contracts.MaxLineBytes*2 + 100
		}
		for range n {
			out.WriteByte(byte('a' + rnd.IntN(26)))
		}
		out.WriteByte('\n')
	}
	data := out.Bytes()
	const chunk = 32 << 10

	var emitted int
	w := lines.NewWriter(contracts.Stdout, contracts.MaxLineBytes, func(lines.Line) error {
		emitted++
		return nil
	})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			k := min(chunk, len(rest))
			if _, err := w.Write(rest[:k]); err != nil {
				b.Fatal(err)
			}
			rest = rest[k:]
		}
	}
	b.ReportMetric(float64(emitted)/b.Elapsed().Seconds(), "lines/s")
}

// A Writer holds no line buffer until a line spans writes: a short job's
// two Writers used to allocate 16 KiB each up front, most of what the job
// allocated. Not parallel, so that other tests' allocations stay out of
// the count.
func TestWriterBuffersOnlyALineThatSpansWrites(t *testing.T) {
	const runs = 100
	emit := func(lines.Line) error { return nil }
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		w := lines.NewWriter(contracts.Stdout, contracts.MaxLineBytes, emit)
		if _, err := w.Write([]byte("a whole line\nand another\n")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / runs; per > 1<<10 {
		t.Fatalf("%d bytes allocated per Writer of whole lines; want at most 1 KiB", per)
	}
}
