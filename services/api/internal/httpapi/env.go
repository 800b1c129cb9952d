package httpapi

import "github.com/rdev-dev/rdev/pkg/contracts"

// splitEnv separates plain values from secret references.
func splitEnv(in map[string]contracts.EnvValue) (env, secretEnv map[string]string) {
	for k, v := range in {
		if v.Secret != "" {
			if secretEnv == nil {
				secretEnv = map[string]string{}
			}
			secretEnv[k] = v.Secret
			continue
		}
		if env == nil {
			env = map[string]string{}
		}
		env[k] = v.Value
	}
	return env, secretEnv
}
