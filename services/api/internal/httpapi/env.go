package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
)

// envValue is one value of a submit's env: a string, set as it is, or
// {"secret":"<name>"}, the project secret of that name, which the worker
// resolves when it starts the command (the value never travels with the
// job).
type envValue struct {
	value  string
	secret string // "" for a plain value
}

func (v *envValue) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*v = envValue{}
		return nil
	case len(b) > 0 && b[0] == '"':
		return json.Unmarshal(b, &v.value)
	case len(b) > 0 && b[0] == '{':
		// Decoded by hand: encoding/json would match "Secret" or "SECRET"
		// too, and every other key must be refused.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(b, &obj); err != nil {
			return envError()
		}
		raw, ok := obj["secret"]
		if !ok || len(obj) != 1 {
			return envError()
		}
		var name string
		if err := json.Unmarshal(raw, &name); err != nil || name == "" {
			return envError()
		}
		*v = envValue{secret: name}
		return nil
	}
	return envError()
}

func envError() error {
	return reqErr(http.StatusBadRequest, "invalid_env", `each env value must be a string, or {"secret":"<name>"} for a project secret`)
}

// splitEnv separates plain values from secret references.
func splitEnv(in map[string]envValue) (env, secretEnv map[string]string) {
	for k, v := range in {
		if v.secret != "" {
			if secretEnv == nil {
				secretEnv = map[string]string{}
			}
			secretEnv[k] = v.secret
			continue
		}
		if env == nil {
			env = map[string]string{}
		}
		env[k] = v.value
	}
	return env, secretEnv
}
