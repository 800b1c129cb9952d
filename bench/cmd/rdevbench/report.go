package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// figure is one measured number, with its target when the issue sets one.
type figure struct {
	Scenario string  `json:"scenario"`
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	// Target is e.g. "<= 2"; empty for figures reported for context.
	Target string `json:"target,omitempty"`
	// Met says whether Value meets Target; absent without a target.
	Met *bool `json:"met,omitempty"`
}

// fig returns a figure without a target.
func fig(name string, v float64, unit string) figure {
	return figure{Name: name, Value: v, Unit: unit}
}

// target returns a figure checked against op limit ("<=", "<" or ">=").
func target(name string, v float64, unit, op string, limit float64) figure {
	var met bool
	switch op {
	case "<=":
		met = v <= limit
	case "<":
		met = v < limit
	case ">=":
		met = v >= limit
	default:
		panic("unknown operator " + op)
	}
	return figure{Name: name, Value: v, Unit: unit, Target: fmt.Sprintf("%s %g", op, limit), Met: &met}
}

type report struct {
	Command  string            `json:"command"`
	Machine  string            `json:"machine"`
	Started  time.Time         `json:"started"`
	Quick    bool              `json:"quick"`
	Params   map[string]any    `json:"params"`
	Figures  []figure          `json:"figures"`
	Errors   map[string]string `json:"errors,omitempty"`
	Duration string            `json:"duration"`
}

func newReport(cfg config, root string) *report {
	cmd := "go run ./bench/cmd/rdevbench"
	if !strings.Contains(os.Args[0], "go-build") {
		cmd = os.Args[0]
	}
	if len(os.Args) > 1 {
		cmd += " " + strings.Join(os.Args[1:], " ")
	}
	goVersion := runtime.Version()
	if out, err := exec.Command("go", "version").Output(); err == nil {
		goVersion = strings.TrimSpace(string(out))
	}
	return &report{
		Command: fmt.Sprintf("(cd %s && %s)", root, cmd),
		Machine: fmt.Sprintf("nproc=%d, %s, %s, %s/%s", runtime.NumCPU(), cpuModel(), goVersion, runtime.GOOS, runtime.GOARCH),
		Started: time.Now().UTC().Truncate(time.Second),
		Quick:   cfg.quick,
		Params: map[string]any{
			"latency_runs": cfg.latencyRuns, "latency_warmup": cfg.latencyWarmup, "lines": cfg.lines,
			"mem_bytes": cfg.memBytes, "idle_conns": cfg.idleConns, "idle_streams": cfg.idleStreams, "rdev": cfg.rdev,
			"cli_runs": cfg.cliRuns, "cli_warmup": cfg.cliWarmup,
		},
		Errors: map[string]string{},
	}
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "cpu unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "cpu unknown"
}

func (r *report) add(scenario string, figs []figure, err error) {
	for _, f := range figs {
		f.Scenario = scenario
		r.Figures = append(r.Figures, f)
	}
	if err != nil {
		r.Errors[scenario] = err.Error()
	}
}

func (r *report) print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tFIGURE\tVALUE\tUNIT\tTARGET\tMET")
	for _, f := range r.Figures {
		met := ""
		if f.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*f.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Scenario, f.Name, format(f.Value), f.Unit, f.Target, met)
	}
	tw.Flush()
	for s, e := range r.Errors {
		fmt.Fprintf(w, "%s FAILED: %s\n", s, e)
	}
	fmt.Fprintf(w, "\n%s\n%s\ntotal %s\n", r.Command, r.Machine, r.Duration)
}

// format prints v with about four significant digits.
func format(v float64) string {
	switch a := max(v, -v); {
	case a >= 1000 || v == float64(int64(v)):
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.1f", v)
	case a >= 10:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // keep "->" and "&&" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
