package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/rdev-dev/rdev/pkg/contracts"
)

func webhookPath(project, id string) string {
	p := "/v1/projects/" + esc(project) + "/webhooks"
	if id != "" {
		p += "/" + esc(id)
	}
	return p
}

func deliveryPath(project, id, delivery string) string {
	return webhookPath(project, id) + "/deliveries/" + esc(delivery)
}

// CreateWebhook creates a webhook endpoint (POST
// /v1/projects/{project}/webhooks). The reply holds its signing secret,
// which no later call shows again.
func (c *Client) CreateWebhook(ctx context.Context, project string, req contracts.WebhookRequest) (contracts.WebhookCreated, error) {
	var out contracts.WebhookCreated
	_, err := c.do(ctx, request{method: http.MethodPost, path: webhookPath(project, ""), body: req, ok: []int{http.StatusCreated}}, &out)
	return out, err
}

// Webhooks lists a project's webhook endpoints, oldest first (GET
// /v1/projects/{project}/webhooks).
func (c *Client) Webhooks(ctx context.Context, project string) (contracts.WebhookList, error) {
	var out contracts.WebhookList
	_, err := c.do(ctx, request{method: http.MethodGet, path: webhookPath(project, "")}, &out)
	return out, err
}

// Webhook returns one endpoint (GET …/webhooks/{id}).
func (c *Client) Webhook(ctx context.Context, project, id string) (contracts.Webhook, error) {
	var out contracts.Webhook
	_, err := c.do(ctx, request{method: http.MethodGet, path: webhookPath(project, id)}, &out)
	return out, err
}

// UpdateWebhook changes the fields p sets (PATCH …/webhooks/{id}).
func (c *Client) UpdateWebhook(ctx context.Context, project, id string, p contracts.WebhookPatch) (contracts.Webhook, error) {
	var out contracts.Webhook
	_, err := c.do(ctx, request{method: http.MethodPatch, path: webhookPath(project, id), body: p}, &out)
	return out, err
}

// DeleteWebhook deletes an endpoint (DELETE …/webhooks/{id}); its
// delivery records expire with their bucket.
func (c *Client) DeleteWebhook(ctx context.Context, project, id string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: webhookPath(project, id), ok: []int{http.StatusNoContent}}, nil)
	return err
}

// RotateWebhookSecret replaces an endpoint's signing secret (POST
// …/{id}/rotate-secret); the previous one signs beside it until the
// reply's PreviousSecretExpiresAt.
func (c *Client) RotateWebhookSecret(ctx context.Context, project, id string) (contracts.WebhookRotated, error) {
	var out contracts.WebhookRotated
	_, err := c.do(ctx, request{method: http.MethodPost, path: webhookPath(project, id) + "/rotate-secret"}, &out)
	return out, err
}

// TestWebhook queues a ping to the endpoint (POST …/{id}/test) and
// returns its delivery, to follow with WebhookDelivery.
func (c *Client) TestWebhook(ctx context.Context, project, id string) (contracts.WebhookDelivery, error) {
	var out contracts.WebhookDelivery
	_, err := c.do(ctx, request{method: http.MethodPost, path: webhookPath(project, id) + "/test", ok: []int{http.StatusAccepted}}, &out)
	return out, err
}

// WebhookDeliveries returns one page of an endpoint's deliveries, newest
// first (GET …/{id}/deliveries); status, when set, keeps one status.
// Page.Limit 0 is the server's default.
func (c *Client) WebhookDeliveries(ctx context.Context, project, id string, status contracts.DeliveryStatus, p Page) (contracts.WebhookDeliveryPage, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", string(status))
	}
	var out contracts.WebhookDeliveryPage
	_, err := c.do(ctx, request{method: http.MethodGet, path: withQuery(webhookPath(project, id)+"/deliveries", p.query(q))}, &out)
	return out, err
}

// WebhookDelivery returns one delivery with its body and its attempts
// (GET …/{id}/deliveries/{delivery}).
func (c *Client) WebhookDelivery(ctx context.Context, project, id, delivery string) (contracts.WebhookDeliveryRecord, error) {
	var out contracts.WebhookDeliveryRecord
	_, err := c.do(ctx, request{method: http.MethodGet, path: deliveryPath(project, id, delivery)}, &out)
	return out, err
}

// RedeliverWebhook sends a delivery again, with the same webhook-id
// (POST …/deliveries/{delivery}/redeliver).
func (c *Client) RedeliverWebhook(ctx context.Context, project, id, delivery string) (contracts.WebhookDelivery, error) {
	var out contracts.WebhookDelivery
	_, err := c.do(ctx, request{method: http.MethodPost, path: deliveryPath(project, id, delivery) + "/redeliver", ok: []int{http.StatusAccepted}}, &out)
	return out, err
}
