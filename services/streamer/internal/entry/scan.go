package entry

import (
	"errors"
	"fmt"
	"math"
)

// errUnusual is returned by scanLine for JSON outside the flat shape it
// handles: a document that is not an object, a nested object or array, or
// a key with escapes or non-ASCII bytes. The caller then decodes with
// encoding/json, which gives the same answer more slowly. Output lines as
// the worker writes them never take that path.
var errUnusual = errors.New("unusual JSON: decode in full")

// scanLine reads the top-level "v" and "seq" of an output line exactly as
// json.Unmarshal into a lineHeader would: keys match regardless of ASCII
// case, the last of repeated keys wins, null leaves a field as it is, a
// number that is not an integer in range is an error, and the whole
// document is validated, so that a malformed message is refused rather
// than sent to clients. It reads data once and allocates nothing.
//
// FuzzParse holds it to encoding/json's answers.
func scanLine(data []byte) (lineHeader, error) {
	var h lineHeader
	s := scanner{data: data}
	s.space()
	if s.peek() != '{' {
		return h, errUnusual
	}
	s.i++
	s.space()
	if s.peek() == '}' {
		s.i++
		return h, s.end()
	}
	for {
		if s.peek() != '"' {
			return h, s.syntax("object key")
		}
		key, plain, err := s.str()
		if err != nil {
			return h, err
		}
		if !plain {
			return h, errUnusual // escaped or non-ASCII: leave folding rules to encoding/json
		}
		s.space()
		if s.peek() != ':' {
			return h, s.syntax("':' after object key")
		}
		s.i++
		s.space()
		lit, kind, err := s.value()
		if err != nil {
			return h, err
		}
		switch {
		case kind == 'n':
			// null leaves the field untouched, as encoding/json does.
		case equalFold(key, "v"):
			v, ok := parseInt(lit, kind)
			if !ok {
				return h, fmt.Errorf("field v: %q is not an int", lit)
			}
			h.V = v
		case equalFold(key, "seq"):
			seq, ok := parseUint(lit, kind)
			if !ok {
				return h, fmt.Errorf("field seq: %q is not a uint64", lit)
			}
			h.Seq = seq
		}
		s.space()
		switch s.peek() {
		case ',':
			s.i++
			s.space()
		case '}':
			s.i++
			return h, s.end()
		default:
			return h, s.syntax("',' or '}' after object value")
		}
	}
}

// scanner walks a JSON document.
type scanner struct {
	data []byte
	i    int
}

// peek returns the current byte, or 0 at the end (never valid JSON there).
func (s *scanner) peek() byte {
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// end checks that only whitespace follows the document.
func (s *scanner) end() error {
	s.space()
	if s.i != len(s.data) {
		return s.syntax("end of input after the object")
	}
	return nil
}

func (s *scanner) syntax(want string) error {
	if s.i >= len(s.data) {
		return fmt.Errorf("invalid JSON: unexpected end of input, want %s", want)
	}
	return fmt.Errorf("invalid JSON at offset %d: unexpected %q, want %s", s.i, s.data[s.i], want)
}

// value scans one scalar value and returns its bytes and kind: '"' for a
// string, '0' for a number, 't', 'f' or 'n' for a literal. Objects and
// arrays are errUnusual.
func (s *scanner) value() (lit []byte, kind byte, err error) {
	start := s.i
	switch c := s.peek(); {
	case c == '"':
		_, _, err = s.str()
		kind = '"'
	case c == '-' || ('0' <= c && c <= '9'):
		err = s.number()
		kind = '0'
	case c == 't':
		err = s.literal("true")
		kind = 't'
	case c == 'f':
		err = s.literal("false")
		kind = 'f'
	case c == 'n':
		err = s.literal("null")
		kind = 'n'
	case c == '{' || c == '[':
		err = errUnusual
	default:
		err = s.syntax("a value")
	}
	return s.data[start:s.i], kind, err
}

// str scans a string from its opening quote and returns what lies between
// the quotes. plain reports that it is printable ASCII without escapes, so
// that the raw bytes are the string.
func (s *scanner) str() (raw []byte, plain bool, err error) {
	s.i++
	start := s.i
	var high byte // ORs every byte: bit 7 set means non-ASCII
	plain = true
	for {
		// The bulk of a line is its text: run through it in a tight loop.
		data, i := s.data, s.i
		for i < len(data) && !stopsString[data[i]] {
			high |= data[i]
			i++
		}
		s.i = i
		switch c := s.peek(); {
		case s.i >= len(s.data):
			return nil, false, s.syntax("closing quote")
		case c == '"':
			raw = s.data[start:s.i]
			s.i++
			// Bytes from 0x80 are taken as they are, valid UTF-8 or not,
			// like encoding/json does.
			return raw, plain && high < 0x80, nil
		case c == '\\':
			plain = false
			if err := s.escape(); err != nil {
				return nil, false, err
			}
		default:
			return nil, false, s.syntax("no control character in a string")
		}
	}
}

// stopsString marks the bytes that end the plain run of a string: the
// closing quote, a backslash and the control characters JSON forbids.
var stopsString = func() (t [256]bool) {
	for c := range 0x20 {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

// escape scans a backslash escape.
func (s *scanner) escape() error {
	s.i++
	switch s.peek() {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
		return nil
	case 'u':
		s.i++
		for range 4 {
			if !isHex(s.peek()) {
				return s.syntax("hex digit in \\u escape")
			}
			s.i++
		}
		return nil
	}
	return s.syntax("escape character")
}

func isHex(c byte) bool {
	return ('0' <= c && c <= '9') || ('a' <= c && c <= 'f') || ('A' <= c && c <= 'F')
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case '1' <= c && c <= '9':
		s.digits()
	default:
		return s.syntax("digit")
	}
	if s.peek() == '.' {
		s.i++
		if s.digits() == 0 {
			return s.syntax("digit after decimal point")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if s.digits() == 0 {
			return s.syntax("digit in exponent")
		}
	}
	return nil
}

func (s *scanner) digits() int {
	start := s.i
	for s.i < len(s.data) && '0' <= s.data[s.i] && s.data[s.i] <= '9' {
		s.i++
	}
	return s.i - start
}

func (s *scanner) literal(word string) error {
	if len(s.data)-s.i < len(word) || string(s.data[s.i:s.i+len(word)]) != word {
		return s.syntax(word)
	}
	s.i += len(word)
	return nil
}

// equalFold reports whether the ASCII key equals name, a lower-case ASCII
// field name, regardless of case.
func equalFold(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// parseUint converts a scanned value as encoding/json does for a uint64
// field: only a number written as a plain decimal in range is accepted.
func parseUint(lit []byte, kind byte) (uint64, bool) {
	if kind != '0' || len(lit) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range lit {
		if c < '0' || c > '9' {
			return 0, false // a sign, a fraction or an exponent
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// parseInt converts a scanned value as encoding/json does for an int
// field.
func parseInt(lit []byte, kind byte) (int, bool) {
	neg := len(lit) > 0 && lit[0] == '-'
	if neg {
		lit = lit[1:]
	}
	u, ok := parseUint(lit, kind)
	switch {
	case !ok:
		return 0, false
	case !neg && u <= math.MaxInt:
		return int(u), true
	case neg && u == 0:
		return 0, true
	case neg && u-1 <= math.MaxInt:
		return -int(u-1) - 1, true
	}
	return 0, false
}
