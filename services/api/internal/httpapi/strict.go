package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"unicode/utf16"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

// strictDecode reads exactly one JSON object into v, the one decoder of
// every request body and batch item. Beyond encoding/json's checks it
// refuses what that package silently accepts: a field named other than
// exactly as documented (encoding/json matches names case-insensitively),
// a key given twice in one object (encoding/json keeps the last), and a
// lone UTF-16 surrogate escape (encoding/json turns it into U+FFFD).
func strictDecode(raw []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if dec.More() {
		return reqErr(http.StatusBadRequest, "invalid_json", "expected exactly one JSON object, and nothing after it")
	}
	if err := loneSurrogate(raw); err != nil {
		return err
	}
	names := json.NewDecoder(bytes.NewReader(raw))
	names.UseNumber()
	return checkNames(names, reflect.TypeOf(v), "")
}

func decodeError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var re *requestError
	switch {
	case errors.As(err, &re):
		return re
	case errors.Is(err, contracts.ErrInvalidEnv): // an env value's own decoder refused it
		return reqErr(http.StatusBadRequest, "invalid_env", contracts.ErrInvalidEnv.Error())
	case errors.Is(err, io.EOF):
		return reqErr(http.StatusBadRequest, "invalid_json", "the body is empty; send a JSON object")
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return reqErr(http.StatusBadRequest, "invalid_json", "the body is not valid JSON: "+err.Error())
	case errors.As(err, &typ):
		field := typ.Field[strings.LastIndexByte(typ.Field, '.')+1:] // without embedded structs' names
		if field == "" {
			return reqErr(http.StatusBadRequest, "invalid_json", "the body must be a JSON object")
		}
		return reqErr(http.StatusBadRequest, "invalid_field", fmt.Sprintf("field %q must be %s, not %s", field, typ.Type, typ.Value))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return reqErr(http.StatusBadRequest, "unknown_field", strings.TrimPrefix(err.Error(), "json: ")+" (check the spelling; unknown fields are refused)")
	}
	return reqErr(http.StatusBadRequest, "invalid_json", err.Error())
}

// checkNames walks the next JSON value of dec, already known to be valid,
// alongside the Go type t it was decoded into: every object key must be
// unique in its object, and a struct's keys must be its fields' JSON names
// exactly. Map keys are free (env names differing in case are different
// variables) but still unique.
func checkNames(dec *json.Decoder, t reflect.Type, path string) error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	tok, err := dec.Token()
	if err != nil {
		return decodeError(err)
	}
	switch tok {
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if err := checkNames(dec, elem, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	case json.Delim('{'):
	default:
		return nil // a scalar
	}
	var fields map[string]reflect.Type // nil: any key (a map, or not known)
	var elem reflect.Type
	switch {
	case t != nil && t.Kind() == reflect.Struct && !t.Implements(unmarshalerType) && !reflect.PointerTo(t).Implements(unmarshalerType):
		fields = map[string]reflect.Type{}
		jsonFields(t, fields)
	case t != nil && t.Kind() == reflect.Map:
		elem = t.Elem()
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return decodeError(err)
		}
		key, _ := tok.(string)
		where := strings.TrimPrefix(path+"."+key, ".")
		if seen[key] {
			return reqErr(http.StatusBadRequest, "invalid_json", fmt.Sprintf("field %q is given twice; give each field once", where))
		}
		seen[key] = true
		next := elem
		if fields != nil {
			ft, ok := fields[key]
			if !ok {
				return reqErr(http.StatusBadRequest, "unknown_field", fmt.Sprintf("unknown field %q (names are case-sensitive; check the spelling; unknown fields are refused)", where))
			}
			next = ft
		}
		if err := checkNames(dec, next, where); err != nil {
			return err
		}
	}
	_, err = dec.Token() // '}'
	return err
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// jsonFields collects the JSON names of t's fields, with embedded structs'
// fields promoted as encoding/json does.
func jsonFields(t reflect.Type, out map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				jsonFields(ft, out)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
}

// loneSurrogate refuses a \uD800-\uDFFF escape that is not half of a
// surrogate pair: it encodes no character, and encoding/json would turn
// it into U+FFFD unnoticed. raw is valid JSON.
func loneSurrogate(raw []byte) error {
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !inString {
			inString = c == '"'
			continue
		}
		switch c {
		case '"':
			inString = false
		case '\\':
			if i+1 < len(raw) && raw[i+1] == 'u' {
				r := hex4(raw, i+2)
				if utf16.IsSurrogate(r) {
					low := rune(-1)
					if i+7 < len(raw) && raw[i+6] == '\\' && raw[i+7] == 'u' {
						low = hex4(raw, i+8)
					}
					if r >= 0xDC00 || utf16.DecodeRune(r, low) == 0xFFFD {
						return reqErr(http.StatusBadRequest, "invalid_json", fmt.Sprintf(`the body holds the escape \u%04x, half of a UTF-16 surrogate pair without its other half; it encodes no character`, r))
					}
					i += 6 // the pair's second half is checked as a valid low surrogate above
				}
				i += 5
			} else {
				i++
			}
		}
	}
	return nil
}

// hex4 reads 4 hex digits at raw[i:], or -1.
func hex4(raw []byte, i int) rune {
	if i+4 > len(raw) {
		return -1
	}
	var r rune
	for _, c := range raw[i : i+4] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(d)
	}
	return r
}
