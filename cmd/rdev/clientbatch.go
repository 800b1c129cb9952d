package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"text/tabwriter"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// batchCmd submits batches.
type batchCmd struct {
	Submit batchSubmitCmd `cmd:"" help:"Submit the jobs of a .json (array) or .jsonl (one per line) file as one batch."`
}

type batchSubmitCmd struct {
	Server  serverFlags `embed:""`
	Out     outputFlags `embed:""`
	Project string      `short:"p" env:"RDEV_PROJECT" help:"Project to run in (default: the context's)."`
	Atomic  bool        `help:"Queue nothing unless every job is accepted."`
	Follow  bool        `short:"f" help:"Follow the batch to its end: progress on a terminal, then a summary by status."`
	File    string      `arg:"" type:"existingfile" help:"File of batch items ({\"command\":[...]} or {\"prompt\":...}, with submit options)."`
}

func (c *batchSubmitCmd) Run(ctx context.Context, std stdio) error {
	srv, err := c.Server.resolveProject(c.Project)
	if err != nil {
		return err
	}
	project := srv.project
	items, err := readBatchFile(c.File)
	if err != nil {
		return &exitError{code: exitRejected, msg: err.Error()}
	}
	cl := srv.client()
	res, err := cl.SubmitBatch(ctx, project, items, c.Atomic)
	var ae *client.Error
	if errors.As(err, &ae) && ae.Status != 401 {
		printRefused(std.err, ae.Items)
		return &exitError{code: exitRejected, msg: "batch refused: " + err.Error()}
	}
	if err != nil {
		return explain(err)
	}
	printRefused(std.err, res.Items)
	if !c.Follow {
		if err := c.Out.print(std.out, res, func(w *tabwriter.Writer, _ func(contracts.Status) string) {
			fmt.Fprintf(w, "BATCH\t%s\nACCEPTED\t%d\nREJECTED\t%d\n", res.BatchID, res.Accepted, res.Rejected)
		}); err != nil {
			return err
		}
		if res.Rejected > 0 {
			return &exitError{code: exitRejected}
		}
		return nil
	}
	done, err := followBatch(ctx, cl, srv, res, c.Out.progressOn(std.err))
	if err != nil {
		return explain(err)
	}
	if err := c.Out.print(std.out, done, func(w *tabwriter.Writer, paint func(contracts.Status) string) {
		// Counts first: a coloured status would upset the column widths.
		fmt.Fprintf(w, "JOBS\tSTATUS (batch %s)\n", done.BatchID)
		for _, s := range []contracts.Status{contracts.StatusSucceeded, contracts.StatusFailed, contracts.StatusTimedOut, contracts.StatusCancelled} {
			fmt.Fprintf(w, "%d\t%s\n", done.Counts[s], paint(s))
		}
		fmt.Fprintf(w, "%d\trejected\n", res.Rejected)
	}); err != nil {
		return err
	}
	if res.Rejected > 0 || done.Counts[contracts.StatusSucceeded] != done.Jobs {
		return &exitError{code: 1, msg: fmt.Sprintf("%d of %d jobs did not succeed", len(items)-done.Counts[contracts.StatusSucceeded], len(items))}
	}
	return nil
}

// progressOn: a live progress display only on a terminal without
// NO_COLOR (it redraws with escape sequences).
func (o outputFlags) progressOn(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok || o.NoColor != "" {
		return nil
	}
	if st, err := f.Stat(); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}

// followBatch follows the batch's lifecycle events to its complete
// event, drawing progress on progress when it is not nil.
func followBatch(ctx context.Context, cl *client.Client, srv server, res contracts.BatchResponse, progress io.Writer) (contracts.BatchComplete, error) {
	s, err := cl.Follow(ctx, srv.streamURL+client.BatchEventsURL(res.BatchID), client.FollowOptions{})
	if err != nil {
		return contracts.BatchComplete{}, err
	}
	defer func() { _ = s.Close() }()
	var bar *mpb.Bar
	var running, ended atomic.Int64
	status := map[string]contracts.Status{}
	if progress != nil {
		p := mpb.NewWithContext(ctx, mpb.WithOutput(progress))
		defer p.Wait()
		bar = p.AddBar(int64(res.Accepted),
			mpb.PrependDecorators(decor.Any(func(decor.Statistics) string {
				return fmt.Sprintf("%d queued %d running", int64(res.Accepted)-ended.Load()-running.Load(), running.Load())
			})),
			mpb.AppendDecorators(decor.CountersNoUnit("%d/%d done"), decor.AverageSpeed(nil, " %.1f/s"), decor.AverageETA(decor.ET_STYLE_GO, decor.WCSyncSpace)))
		defer bar.Abort(false)
	}
	for {
		ev, err := s.Next()
		if err != nil {
			return contracts.BatchComplete{}, err
		}
		switch ev.Name {
		case contracts.SSEStatus:
			e, err := ev.Status()
			if err != nil || status[e.JobID].Final() {
				continue
			}
			prev := status[e.JobID]
			status[e.JobID] = e.Status
			switch {
			case e.Status == contracts.StatusRunning && prev != contracts.StatusRunning:
				running.Add(1)
			case e.Status.Final():
				if prev == contracts.StatusRunning {
					running.Add(-1)
				}
				ended.Add(1)
				if bar != nil {
					bar.Increment()
				}
			}
		case contracts.SSEComplete:
			return ev.BatchComplete()
		}
	}
}

// printRefused lists the items the API refused, one a line.
func printRefused(w io.Writer, items []contracts.BatchItemResult) {
	for _, it := range items {
		if it.Error != nil {
			fmt.Fprintf(w, "rdev: item %d refused: %s: %s\n", it.Index, it.Error.Code, it.Error.Message)
		}
	}
}

// readBatchFile reads a JSON array (.json) or JSON lines (.jsonl) of
// batch items, refusing unknown fields.
func readBatchFile(path string) ([]contracts.BatchItem, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read batch: %w", err)
	}
	var items []contracts.BatchItem
	switch ext := filepath.Ext(path); ext {
	case ".json":
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&items); err != nil {
			return nil, fmt.Errorf("%s: want a JSON array of batch items: %w", path, err)
		}
	case ".jsonl", ".ndjson":
		sc := bufio.NewScanner(bytes.NewReader(b))
		sc.Buffer(nil, len(b)+1)
		for n := 1; sc.Scan(); n++ {
			if len(bytes.TrimSpace(sc.Bytes())) == 0 {
				continue
			}
			var it contracts.BatchItem
			dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&it); err != nil {
				return nil, fmt.Errorf("%s line %d: %w", path, n, err)
			}
			items = append(items, it)
		}
	default:
		return nil, fmt.Errorf("batch file %s: want .json or .jsonl", path)
	}
	if len(items) == 0 || slices.ContainsFunc(items, func(it contracts.BatchItem) bool { return len(it.Command) == 0 && it.Prompt == "" }) {
		return nil, fmt.Errorf("%s: every item needs a command or a prompt, and there must be one", path)
	}
	return items, nil
}
