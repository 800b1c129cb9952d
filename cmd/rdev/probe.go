package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// probeCmd is a container health check for an image without a shell or
// curl: it succeeds when URL answers 2xx within the timeout.
type probeCmd struct {
	URL     string        `arg:"" help:"URL to GET, e.g. http://127.0.0.1:8080/readyz."`
	Timeout time.Duration `default:"3s" help:"How long the request may take."`
}

func (c *probeCmd) Run(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL, nil)
	if err != nil {
		return fmt.Errorf("probe %q: %w", c.URL, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("probe %s: %s", c.URL, resp.Status)
	}
	return nil
}
