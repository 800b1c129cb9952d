package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"

	"github.com/rdev-dev/rdev/pkg/client"
)

// serverFlags say which rdev server the client commands talk to. Flags
// and environment win over the config file's context, as kubectl's do.
type serverFlags struct {
	URL       string `name:"url" env:"RDEV_URL" help:"Base URL of the rdev API, e.g. http://127.0.0.1:8080 (default: the context's)."`
	StreamURL string `name:"stream-url" env:"RDEV_STREAM_URL" help:"Base URL of the SSE streamer when it is not behind the API's address (default: the context's, else --url)."`
	// APIKey is a secret: never printed.
	APIKey  string `name:"api-key" env:"RDEV_API_KEY" help:"API key (default: the context's)."`
	Context string `name:"context" env:"RDEV_CONTEXT" help:"Context of the config file to use (default: its current-context)."`
	Config  string `name:"config" env:"RDEV_CONFIG" type:"path" help:"Config file with named contexts (default: $XDG_CONFIG_HOME/rdev/config.yaml)."`
}

// server is one resolved server: where, with which key, in which project.
type server struct {
	url, streamURL, key, project string
}

// resolve merges the flags over the config file's context; project is
// the command's -p (RDEV_PROJECT), which wins over the context's.
func (f serverFlags) resolve(project string) (server, error) {
	s := server{url: f.URL, streamURL: f.StreamURL, key: f.APIKey, project: project}
	path, err := f.configPath()
	if err != nil {
		return s, err
	}
	cfg, err := readConfig(path)
	if err != nil {
		return s, err
	}
	name := cmpOr(f.Context, cfg.CurrentContext)
	if ctx, ok := cfg.find(name); ok {
		s.url, s.streamURL = cmpOr(s.url, ctx.URL), cmpOr(s.streamURL, ctx.StreamURL)
		s.key, s.project = cmpOr(s.key, ctx.APIKey), cmpOr(s.project, ctx.Project)
	} else if f.Context != "" {
		return s, fmt.Errorf("no context %q in %s: see `rdev context ls`", f.Context, path)
	}
	if s.url == "" {
		return s, errors.New("no server: set RDEV_URL (and RDEV_API_KEY) or run `rdev context add NAME --url URL --api-key KEY`")
	}
	s.streamURL = cmpOr(s.streamURL, s.url)
	return s, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (f serverFlags) configPath() (string, error) {
	if f.Config != "" {
		return f.Config, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("find the config file: %w (set --config or RDEV_CONFIG)", err)
	}
	return filepath.Join(dir, "rdev", "config.yaml"), nil
}

// client is a pkg/client for s, with the user agent of this binary.
func (s server) client() *client.Client {
	return client.New(s.url, client.WithAPIKey(s.key), client.WithUserAgent("rdev-cli/"+version))
}

// resolveProject is resolve for a command that needs a project, saying
// how to name one when there is none.
func (f serverFlags) resolveProject(project string) (server, error) {
	s, err := f.resolve(project)
	if err == nil && s.project == "" {
		err = errors.New("no project: pass -p PROJECT, set RDEV_PROJECT or a context's project (`rdev context add NAME --project P`)")
	}
	return s, err
}

// explain adds what to do to the errors a user can fix: a server that
// does not answer, and some API refusals.
func explain(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("%w (no rdev server answers there: start one with `rdev up`, or point RDEV_URL or the context at one: `rdev context ls`)", err)
	}
	var ae *client.Error
	if !errors.As(err, &ae) {
		return err
	}
	switch ae.Status {
	case 401:
		return fmt.Errorf("%w (set RDEV_API_KEY or run `rdev context add`)", err)
	case 403:
		return fmt.Errorf("%w (the API key may not do this; ask an admin for a key with the right role or project)", err)
	}
	return err
}

// config is the client's config file: named servers, like a kubeconfig.
type config struct {
	CurrentContext string          `yaml:"current-context,omitempty"`
	Contexts       []configContext `yaml:"contexts"`
}

// configContext is one named server.
type configContext struct {
	Name      string `yaml:"name"`
	URL       string `yaml:"url"`
	StreamURL string `yaml:"stream-url,omitempty"`
	APIKey    string `yaml:"api-key,omitempty"`
	Project   string `yaml:"project,omitempty"`
}

func (c *config) find(name string) (configContext, bool) {
	i := slices.IndexFunc(c.Contexts, func(x configContext) bool { return x.Name == name })
	if i < 0 {
		return configContext{}, false
	}
	return c.Contexts[i], true
}

// readConfig reads path; a missing file is an empty config.
func readConfig(path string) (config, error) {
	var c config
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// writeConfig replaces path atomically, readable by its owner only: it
// holds API keys.
func writeConfig(path string, c config) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// configFile is the --config flag of the context commands.
type configFile struct {
	Config string `name:"config" env:"RDEV_CONFIG" type:"path" help:"Config file (default: $XDG_CONFIG_HOME/rdev/config.yaml)."`
}

// load reads the config file, returning its path.
func (f configFile) load() (string, config, error) {
	path, err := serverFlags{Config: f.Config}.configPath()
	if err != nil {
		return "", config{}, err
	}
	cfg, err := readConfig(path)
	return path, cfg, err
}

// contextCmd manages the config file's contexts.
type contextCmd struct {
	Add contextAddCmd `cmd:"" help:"Add or replace a context and make it current."`
	Use contextUseCmd `cmd:"" help:"Make a context current."`
	Ls  contextLsCmd  `cmd:"" help:"List the contexts (keys are never printed)."`
}

type contextAddCmd struct {
	Name       string `arg:"" help:"Name of the context."`
	URL        string `name:"url" required:"" help:"Base URL of the rdev API."`
	StreamURL  string `name:"stream-url" help:"Base URL of the SSE streamer, if not the API's."`
	APIKey     string `name:"api-key" help:"API key (or - to read it from standard input, which keeps it out of the shell history)."`
	Project    string `name:"project" short:"p" help:"Default project."`
	configFile `embed:""`
}

func (c *contextAddCmd) Run(std stdio) error {
	path, cfg, err := c.load()
	if err != nil {
		return err
	}
	key := c.APIKey
	if key == "-" {
		b, err := io.ReadAll(io.LimitReader(std.in, 4096))
		if err != nil {
			return fmt.Errorf("read the API key: %w", err)
		}
		if key = strings.TrimSpace(string(b)); key == "" {
			return errors.New("no API key on standard input")
		}
	}
	ctx := configContext{Name: c.Name, URL: c.URL, StreamURL: c.StreamURL, APIKey: key, Project: c.Project}
	cfg.Contexts = slices.DeleteFunc(cfg.Contexts, func(x configContext) bool { return x.Name == c.Name })
	cfg.Contexts = append(cfg.Contexts, ctx)
	cfg.CurrentContext = c.Name
	if err := writeConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(std.out, "context %q added to %s and made current\n", c.Name, path)
	return nil
}

type contextUseCmd struct {
	Name       string `arg:"" help:"Name of the context."`
	configFile `embed:""`
}

func (c *contextUseCmd) Run(std stdio) error {
	path, cfg, err := c.load()
	if err != nil {
		return err
	}
	if _, ok := cfg.find(c.Name); !ok {
		return fmt.Errorf("no context %q in %s: add it with `rdev context add %s --url URL`", c.Name, path, c.Name)
	}
	cfg.CurrentContext = c.Name
	if err := writeConfig(path, cfg); err != nil {
		return err
	}
	fmt.Fprintf(std.out, "current context: %s\n", c.Name)
	return nil
}

type contextLsCmd struct {
	configFile `embed:""`
}

func (c *contextLsCmd) Run(std stdio) error {
	_, cfg, err := c.load()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(std.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CURRENT\tNAME\tURL\tPROJECT\tAPI KEY")
	for _, x := range cfg.Contexts {
		cur, key := "", "-"
		if x.Name == cfg.CurrentContext {
			cur = "*"
		}
		if x.APIKey != "" {
			key = "set"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", cur, x.Name, x.URL, x.Project, key)
	}
	return w.Flush()
}
