package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
)

// settingsCmd lists every setting of every command from the flag
// definitions themselves, so docs/configuration.md, the Helm chart's and
// docker-compose.yml's environment are checked against what the binary
// actually reads.
type settingsCmd struct {
	JSON bool `name:"json" help:"Print JSON instead of a Markdown table."`
}

// setting is one flag as the commands that have it define it; a flag
// whose default or help differs between commands is one setting per
// variant.
type setting struct {
	Flag     string   `json:"flag"`
	Env      []string `json:"env,omitempty"`
	Default  string   `json:"default,omitempty"`
	Help     string   `json:"help"`
	Commands []string `json:"commands"`
}

func (c *settingsCmd) Run(kctx *kong.Context, stdout io.Writer) error {
	list := settings(kctx.Model)
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	return writeSettingsTable(stdout, list)
}

// settings walks the command tree: flags of the application apply to
// every command, a command's own flags to it alone. The output is sorted
// by flag name, then by the first command.
func settings(app *kong.Application) []setting {
	var cmds []*kong.Node
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, c := range n.Children {
			if c.Group != nil && c.Group.Key == clientGroup {
				continue // the client's flags are in docs/cli.md
			}
			if c.Type == kong.CommandNode && !c.Hidden {
				if c.Leaf() {
					cmds = append(cmds, c)
				}
				walk(c)
			}
		}
	}
	walk(app.Node)
	byKey := map[string]*setting{}
	var keys []string
	add := func(f *kong.Flag, cmd string) {
		if f.Name == "help" {
			return
		}
		s := setting{Flag: "--" + f.Name, Env: f.Envs, Default: f.Default, Help: f.Help}
		key := s.Flag + "\x00" + strings.Join(s.Env, ",") + "\x00" + s.Default + "\x00" + s.Help
		if byKey[key] == nil {
			byKey[key] = &s
			keys = append(keys, key)
		}
		if !slices.Contains(byKey[key].Commands, cmd) {
			byKey[key].Commands = append(byKey[key].Commands, cmd)
		}
	}
	for _, cmd := range cmds {
		for _, f := range app.Flags {
			add(f, cmd.Name)
		}
		for _, f := range cmd.Flags {
			add(f, cmd.Name)
		}
	}
	list := make([]setting, 0, len(keys))
	for _, k := range keys {
		list = append(list, *byKey[k])
	}
	slices.SortStableFunc(list, func(a, b setting) int {
		return strings.Compare(a.Flag+"\x00"+a.Commands[0], b.Flag+"\x00"+b.Commands[0])
	})
	return list
}

func writeSettingsTable(w io.Writer, list []setting) error {
	var b strings.Builder
	b.WriteString("| flag | environment | default | commands | meaning |\n| --- | --- | --- | --- | --- |\n")
	for _, s := range list {
		env := make([]string, len(s.Env))
		for i, e := range s.Env {
			env[i] = "`" + e + "`"
		}
		def := ""
		if s.Default != "" {
			def = "`" + s.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", s.Flag, strings.Join(env, ", "), def,
			strings.Join(s.Commands, ", "), strings.ReplaceAll(s.Help, "|", `\|`))
	}
	_, err := io.WriteString(w, b.String())
	return err
}
