package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rdev-dev/rdev/pkg/client"
	"github.com/rdev-dev/rdev/pkg/contracts"
)

// webhooksCmd manages a project's webhook endpoints and reads their
// deliveries (admin).
type webhooksCmd struct {
	Ls           webhooksLsCmd         `cmd:"" help:"List a project's webhook endpoints (never their secrets)."`
	Get          webhooksGetCmd        `cmd:"" help:"Show a webhook endpoint."`
	Create       webhooksCreateCmd     `cmd:"" help:"Create a webhook endpoint; its signing secret is printed this once."`
	Update       webhooksUpdateCmd     `cmd:"" help:"Change an endpoint's URL, events or description, or turn it off (--no-active) and on (--active)."`
	Delete       webhooksDeleteCmd     `cmd:"" help:"Delete a webhook endpoint."`
	RotateSecret webhooksRotateCmd     `cmd:"" name:"rotate-secret" help:"Give an endpoint a new signing secret, printed this once; the previous one keeps signing beside it for a while."`
	Test         webhooksTestCmd       `cmd:"" help:"Send an endpoint a ping, and wait for its outcome."`
	Deliveries   webhooksDeliveriesCmd `cmd:"" help:"List an endpoint's deliveries, newest first."`
	Delivery     webhooksDeliveryCmd   `cmd:"" help:"Show one delivery with its attempts."`
	Redeliver    webhooksRedeliverCmd  `cmd:"" help:"Send a delivery again, under the same webhook-id."`
}

// webhookIDCmd is the arguments of a command on one endpoint.
type webhookIDCmd struct {
	projectFlags `embed:""`
	ID           string `arg:"" help:"Webhook id (wh_…)."`
}

type webhooksLsCmd struct {
	projectFlags `embed:""`
}

func (c *webhooksLsCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookList, error) {
		return cl.Webhooks(ctx, p)
	}, func(w *tabwriter.Writer, l contracts.WebhookList) {
		fmt.Fprintln(w, "ID\tURL\tEVENTS\tACTIVE\tDESCRIPTION")
		for _, h := range l.Webhooks {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", h.ID, h.URL, eventNames(h.Events), activeText(h), dash(h.Description))
		}
	})
}

type webhooksGetCmd struct {
	webhookIDCmd `embed:""`
}

func (c *webhooksGetCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.Webhook, error) {
		return cl.Webhook(ctx, p, c.ID)
	}, webhookTable)
}

func webhookTable(w *tabwriter.Writer, h contracts.Webhook) {
	fmt.Fprintf(w, "id:\t%s\nurl:\t%s\nevents:\t%s\nactive:\t%s\ndescription:\t%s\n", h.ID, h.URL, eventNames(h.Events), activeText(h), dash(h.Description))
	if h.FailingSince != nil {
		fmt.Fprintf(w, "failing since:\t%s\n", h.FailingSince.Format(time.RFC3339))
	}
	if h.PreviousSecretExpiresAt != nil {
		fmt.Fprintf(w, "previous secret signs until:\t%s\n", h.PreviousSecretExpiresAt.Format(time.RFC3339))
	}
	fmt.Fprintf(w, "created:\t%s\n", h.CreatedAt.Format(time.RFC3339))
}

// activeText says whether an endpoint receives, and why not when rdev
// turned it off.
func activeText(h contracts.Webhook) string {
	switch {
	case h.Active:
		return "yes"
	case h.DisabledReason != "":
		return "no (" + h.DisabledReason + ")"
	}
	return "no"
}

func eventNames(es []contracts.WebhookEventType) string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = string(e)
	}
	return strings.Join(s, ",")
}

func webhookEvents(s []string) []contracts.WebhookEventType {
	es := make([]contracts.WebhookEventType, len(s))
	for i, e := range s {
		es[i] = contracts.WebhookEventType(e)
	}
	return es
}

// webhookEventsHelp lists the event types for the --event flags' help
// (${webhook_events}), from the contract so that it cannot fall behind.
func webhookEventsHelp() string {
	return strings.ReplaceAll(eventNames(contracts.WebhookEventTypes()), ",", ", ")
}

type webhooksCreateCmd struct {
	projectFlags `embed:""`
	URL          string   `arg:"" help:"The http or https URL that receives the deliveries."`
	Events       []string `name:"event" required:"" help:"Event types to send, repeated or comma separated: ${webhook_events}."`
	Description  string   `help:"A description for people."`
	Inactive     bool     `help:"Create it turned off: nothing is sent until rdev webhooks update --active."`
}

func (c *webhooksCreateCmd) Run(ctx context.Context, std stdio) error {
	req := contracts.WebhookRequest{URL: c.URL, Events: webhookEvents(c.Events), Description: c.Description}
	if c.Inactive {
		off := false
		req.Active = &off
	}
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookCreated, error) {
		return cl.CreateWebhook(ctx, p, req)
	}, func(w *tabwriter.Writer, h contracts.WebhookCreated) {
		webhookTable(w, h.Webhook)
		fmt.Fprintf(w, "secret:\t%s\t(shown this once: give it to the receiver to verify signatures)\n", h.Secret)
	})
}

type webhooksUpdateCmd struct {
	webhookIDCmd `embed:""`
	URL          *string  `name:"endpoint-url" help:"A new URL for the deliveries (--url is the rdev server's)."`
	Events       []string `name:"event" help:"Replace the event types with these, repeated or comma separated: ${webhook_events}."`
	Description  *string  `help:"A new description (\"\" clears it)."`
	Active       *bool    `negatable:"" help:"--active turns the endpoint on (and clears a disable by rdev); --no-active turns it off."`
}

func (c *webhooksUpdateCmd) Run(ctx context.Context, std stdio) error {
	p := contracts.WebhookPatch{URL: c.URL, Description: c.Description, Active: c.Active}
	if len(c.Events) > 0 {
		es := webhookEvents(c.Events)
		p.Events = &es
	}
	if p == (contracts.WebhookPatch{}) {
		return fmt.Errorf("nothing to change: give --endpoint-url, --event, --description, --active or --no-active")
	}
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, project string) (contracts.Webhook, error) {
		return cl.UpdateWebhook(ctx, project, c.ID, p)
	}, webhookTable)
}

type webhooksDeleteCmd struct {
	webhookIDCmd `embed:""`
}

func (c *webhooksDeleteCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (string, error) {
		return "webhook " + c.ID + " deleted", cl.DeleteWebhook(ctx, p, c.ID)
	}, func(w *tabwriter.Writer, s string) { fmt.Fprintln(w, s) })
}

type webhooksRotateCmd struct {
	webhookIDCmd `embed:""`
}

func (c *webhooksRotateCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookRotated, error) {
		return cl.RotateWebhookSecret(ctx, p, c.ID)
	}, func(w *tabwriter.Writer, r contracts.WebhookRotated) {
		fmt.Fprintf(w, "secret:\t%s\t(shown this once)\nprevious secret signs until:\t%s\n", r.Secret, r.PreviousSecretExpiresAt.Format(time.RFC3339))
	})
}

type webhooksTestCmd struct {
	webhookIDCmd `embed:""`
	Wait         time.Duration `default:"30s" help:"How long to wait for the ping's outcome (0: print the queued delivery and return)."`
}

// Run queues a ping and, unless --wait 0, polls its delivery until it is
// no longer pending: a user testing an endpoint wants its answer, and a
// failing one exits 1.
func (c *webhooksTestCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookDeliveryRecord, error) {
		d, err := cl.TestWebhook(ctx, p, c.ID)
		if err != nil || c.Wait <= 0 {
			return contracts.WebhookDeliveryRecord{WebhookDelivery: d}, err
		}
		return awaitDelivery(ctx, cl, p, c.ID, d.ID, c.Wait)
	}, deliveryTable)
}

// awaitDelivery polls a delivery until its first attempt has an outcome
// or wait passes. A ping that was not accepted is an error.
func awaitDelivery(ctx context.Context, cl *client.Client, project, id, delivery string, wait time.Duration) (contracts.WebhookDeliveryRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		d, err := cl.WebhookDelivery(ctx, project, id, delivery)
		switch {
		case err != nil && ctx.Err() == nil:
			return d, err
		case err == nil && d.Status == contracts.DeliverySucceeded:
			return d, nil
		case err == nil && d.Attempts > 0:
			then := "rdev retries it by itself"
			if d.Status.Final() {
				then = "it is " + string(d.Status)
			}
			return d, fmt.Errorf("ping %s not accepted (%s; %s): rdev webhooks delivery %s %s shows its attempts",
				delivery, outcomeText(d.WebhookDelivery), then, id, delivery)
		}
		select {
		case <-ctx.Done():
			return d, fmt.Errorf("ping %s: no attempt within %s; is a notifier running, and is the endpoint active? (rdev webhooks delivery %s %s)", delivery, wait, id, delivery)
		case <-tick.C:
		}
	}
}

// outcomeText says in words what the last attempt got.
func outcomeText(d contracts.WebhookDelivery) string {
	switch {
	case d.LastStatusCode != 0:
		return fmt.Sprintf("the endpoint answered %d", d.LastStatusCode)
	case d.LastError != "":
		return d.LastError
	}
	return "no answer"
}

// attemptText is the outcome of a delivery's last attempt, short.
func attemptText(d contracts.WebhookDelivery) string {
	switch {
	case d.Attempts == 0:
		return "not tried yet"
	case d.LastError != "" && d.LastStatusCode != 0:
		return fmt.Sprintf("%d, %s", d.LastStatusCode, d.LastError)
	case d.LastError != "":
		return d.LastError
	}
	return fmt.Sprint(d.LastStatusCode)
}

type webhooksDeliveriesCmd struct {
	webhookIDCmd `embed:""`
	Status       string `enum:",pending,succeeded,failed,exhausted" default:"" help:"Only deliveries of this status."`
	Limit        int    `help:"Deliveries per page (default: the server's)."`
	Cursor       string `help:"The next_cursor of the page before."`
}

func (c *webhooksDeliveriesCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookDeliveryPage, error) {
		return cl.WebhookDeliveries(ctx, p, c.ID, contracts.DeliveryStatus(c.Status), client.Page{Cursor: c.Cursor, Limit: c.Limit})
	}, func(w *tabwriter.Writer, pg contracts.WebhookDeliveryPage) {
		fmt.Fprintln(w, "ID\tCREATED\tTYPE\tJOB\tSTATUS\tATTEMPTS\tLAST")
		for _, d := range pg.Deliveries {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", d.ID, d.CreatedAt.Format(time.RFC3339), d.Type, dash(d.JobID), d.Status, d.Attempts, attemptText(d))
		}
		if pg.NextCursor != "" {
			fmt.Fprintf(w, "next page: --cursor %s\n", pg.NextCursor)
		}
	})
}

// deliveryIDCmd is the arguments of a command on one delivery.
type deliveryIDCmd struct {
	webhookIDCmd `embed:""`
	Delivery     string `arg:"" help:"Delivery id (its webhook-id)."`
}

type webhooksDeliveryCmd struct {
	deliveryIDCmd `embed:""`
}

func (c *webhooksDeliveryCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookDeliveryRecord, error) {
		return cl.WebhookDelivery(ctx, p, c.ID, c.Delivery)
	}, deliveryTable)
}

func deliveryTable(w *tabwriter.Writer, d contracts.WebhookDeliveryRecord) {
	fmt.Fprintf(w, "id:\t%s\ntype:\t%s\nstatus:\t%s\nattempts:\t%d\n", d.ID, d.Type, d.Status, d.Attempts)
	if d.JobID != "" {
		fmt.Fprintf(w, "job:\t%s\n", d.JobID)
	}
	if d.NextAttemptAt != nil && d.Status == contracts.DeliveryPending {
		fmt.Fprintf(w, "next attempt:\t%s\n", d.NextAttemptAt.Format(time.RFC3339))
	}
	if len(d.AttemptLog) == 0 {
		return
	}
	fmt.Fprintln(w, "\nAT\tSTATUS\tLATENCY\tERROR")
	for _, a := range d.AttemptLog {
		code := "-"
		if a.StatusCode != 0 {
			code = fmt.Sprint(a.StatusCode)
		}
		fmt.Fprintf(w, "%s\t%s\t%d ms\t%s\n", a.At.Format(time.RFC3339), code, a.LatencyMS, dash(a.Error))
	}
}

type webhooksRedeliverCmd struct {
	deliveryIDCmd `embed:""`
}

func (c *webhooksRedeliverCmd) Run(ctx context.Context, std stdio) error {
	return projectCall(ctx, c.projectFlags, std, func(cl *client.Client, p string) (contracts.WebhookDelivery, error) {
		return cl.RedeliverWebhook(ctx, p, c.ID, c.Delivery)
	}, func(w *tabwriter.Writer, d contracts.WebhookDelivery) {
		fmt.Fprintf(w, "delivery %s queued again (rdev webhooks delivery %s %s)\n", d.ID, c.ID, d.ID)
	})
}
