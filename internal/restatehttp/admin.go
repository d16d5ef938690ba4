package restatehttp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// Admin calls Restate's admin API.
type Admin struct {
	c *Client // same transport, bounds and error mapping as the ingress
}

// NewAdmin returns a client of the admin API at baseURL (http://host:9070).
func NewAdmin(baseURL string, o Options) (*Admin, error) {
	return NewClusterAdmin([]string{baseURL}, o)
}

// NewClusterAdmin returns a client of the admin APIs of a Restate cluster's nodes, at urls:
// one per node, or a name that resolves to every node. Any node answers for the cluster.
func NewClusterAdmin(urls []string, o Options) (*Admin, error) {
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = 16 << 20 // deployment listings grow with the schema
	}
	c, err := newClient(urls, o, "/health")
	if err != nil {
		return nil, fmt.Errorf("admin %w", err)
	}
	return &Admin{c: c}, nil
}

// Deployment is a registered deployment.
type Deployment struct {
	ID string `json:"id"`
	// Created is false when Restate already had this URI (same schema, nothing changed).
	Created  bool
	Services []struct {
		Name string `json:"name"`
	} `json:"services"`
}

// Register registers the deployment at uri. Restate answers 201 for a new deployment and 200,
// without running discovery, for a URI it knows: callers make the URI change with the schema.
func (a *Admin) Register(ctx context.Context, uri string) (*Deployment, error) {
	body, _ := json.Marshal(map[string]any{"uri": uri})
	resp, rb, err := a.send(ctx, http.MethodPost, "/deployments", body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("registering %s: restate admin answered %d: %s", uri, resp.StatusCode, truncate(rb))
	}
	var d Deployment
	if err := json.Unmarshal(rb, &d); err != nil {
		return nil, fmt.Errorf("registering %s: unreadable answer %q: %w", uri, truncate(rb), err)
	}
	d.Created = resp.StatusCode == http.StatusCreated
	return &d, nil
}

// HasDeployment reports whether Restate still has deployment id: false once it was removed
// (DELETE /deployments/{id}), an error when the admin API cannot say.
func (a *Admin) HasDeployment(ctx context.Context, id string) (bool, error) {
	resp, rb, err := a.send(ctx, http.MethodGet, "/deployments/"+url.PathEscape(id), nil)
	if err != nil {
		return false, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, fmt.Errorf("reading deployment %s: restate admin answered %d: %s", id, resp.StatusCode, truncate(rb))
}

// send sends a request to the admin API of any node that answers. Every admin request may be
// sent again: registering a URI Restate has is a no-op, cancel and kill of an invocation
// once cancelled or killed change nothing, and the rest read.
func (a *Admin) send(ctx context.Context, method, path string, body []byte) (*http.Response, []byte, error) {
	h := http.Header{}
	a.c.token.authorize(h)
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Accept", "application/json")
	return a.c.roundTrip(ctx, request{method: method, path: path, header: h, body: body, replayable: true})
}
