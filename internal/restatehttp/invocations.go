package restatehttp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Ref names an existing invocation: by id, by the idempotency key of a call, or by workflow id.
// Exactly one form is set.
type Ref struct {
	ID string
	// Idempotent: the call's target and its idempotency key.
	Idempotent *Target
	Key        string // the idempotency key, with Idempotent
	// Workflow: the workflow's name and id, with Target.Keyed; Handler unused.
	Workflow *Target
}

func (r Ref) String() string {
	switch {
	case r.Idempotent != nil:
		return fmt.Sprintf("%s (idempotency key %q)", r.Idempotent, r.Key)
	case r.Workflow != nil:
		return fmt.Sprintf("workflow %s/%s", r.Workflow.Service, r.Workflow.Key)
	}
	return r.ID
}

// body is the JSON target of POST /restate/attach|output|lookup.
func (r Ref) body() ([]byte, error) {
	var m map[string]any
	switch {
	case r.Idempotent != nil:
		m = map[string]any{"target": "idempotentInvocation", "service": r.Idempotent.Service, "handler": r.Idempotent.Handler, "idempotencyKey": r.Key}
		if r.Idempotent.Keyed {
			m["key"] = r.Idempotent.Key
		}
	case r.Workflow != nil:
		m = map[string]any{"target": "workflow", "workflowName": r.Workflow.Service, "workflowKey": r.Workflow.Key}
	case r.ID != "":
		m = map[string]any{"target": "invocation", "invocationId": r.ID}
	default:
		return nil, status.Error(codes.InvalidArgument, "no invocation named: give an invocation id, a call with its idempotency key, or a workflow id")
	}
	return json.Marshal(m)
}

// Attach waits for the invocation to finish and returns its result; Output returns it only if
// it has finished (FAILED_PRECONDITION otherwise).
func (c *Client) Attach(ctx context.Context, r Ref) (*Result, error) {
	return c.result(ctx, "attach", r)
}

// Output returns the result of a finished invocation.
func (c *Client) Output(ctx context.Context, r Ref) (*Result, error) {
	return c.result(ctx, "output", r)
}

func (c *Client) result(ctx context.Context, verb string, r Ref) (*Result, error) {
	resp, body, err := c.post(ctx, "/restate/"+verb, r)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, StatusFromResponse(resp.StatusCode, body).Err()
	}
	return &Result{InvocationID: resp.Header.Get("X-Restate-Id"), Status: "Completed", Body: body}, nil
}

// Lookup returns the id of the invocation r names. For a call with an idempotency key or a
// workflow the id is computed, so it is known before (and whether or not) the call is made.
func (c *Client) Lookup(ctx context.Context, r Ref) (string, error) {
	if r.ID != "" {
		return r.ID, nil
	}
	resp, body, err := c.post(ctx, "/restate/lookup", r)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", StatusFromResponse(resp.StatusCode, body).Err()
	}
	var lr struct {
		InvocationID string `json:"invocationId"`
	}
	if err := json.Unmarshal(body, &lr); err != nil || lr.InvocationID == "" {
		return "", status.Errorf(codes.Internal, "restate: unreadable lookup answer %q", truncate(body))
	}
	return lr.InvocationID, nil
}

func (c *Client) post(ctx context.Context, path string, r Ref) (*http.Response, []byte, error) {
	b, err := r.body()
	if err != nil {
		return nil, nil, err
	}
	h := http.Header{}
	c.token.authorize(h)
	h.Set("Content-Type", "application/json")
	// Attach, output and lookup only read: any node may answer, again after a broken
	// connection.
	return c.roundTrip(ctx, request{method: http.MethodPost, path: path, header: h, body: b, replayable: true})
}

// Cancel asks Restate to cancel the invocation: it stops at its next step, runs its
// compensations, and its callers and attachers get CANCELLED.
func (a *Admin) Cancel(ctx context.Context, id string) error { return a.patch(ctx, id, "cancel") }

// Kill ends the invocation at once, without compensation; its callers get ABORTED.
func (a *Admin) Kill(ctx context.Context, id string) error { return a.patch(ctx, id, "kill") }

func (a *Admin) patch(ctx context.Context, id, verb string) error {
	resp, body, err := a.send(ctx, http.MethodPatch, "/invocations/"+url.PathEscape(id)+"/"+verb, nil)
	if err != nil {
		return err
	}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusAccepted:
		return nil
	case http.StatusNotFound:
		return status.Errorf(codes.NotFound, "restate: invocation %s not found", id)
	case http.StatusConflict:
		return status.Errorf(codes.FailedPrecondition, "restate: invocation %s has already completed", id)
	case http.StatusBadRequest:
		return status.Errorf(codes.InvalidArgument, "restate: bad invocation id %q: %s", id, adminMessage(body))
	}
	return status.Errorf(httpCodeToGRPC(resp.StatusCode, ""), "restate admin answered %d to %s %s: %s", resp.StatusCode, verb, id, adminMessage(body))
}

// Query runs a SQL query over Restate's system tables and decodes the rows into rows.
func (a *Admin) Query(ctx context.Context, sql string, rows any) error {
	b, _ := json.Marshal(map[string]string{"query": sql})
	resp, body, err := a.send(ctx, http.MethodPost, "/query", b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("restate query: %d %s", resp.StatusCode, adminMessage(body))
	}
	var out struct {
		Rows json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return fmt.Errorf("restate query: %w", err)
	}
	return json.Unmarshal(out.Rows, rows)
}

func adminMessage(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &m) == nil && m.Message != "" {
		return m.Message
	}
	return truncate(body)
}

var invocationID = regexp.MustCompile(`^inv_[0-9A-Za-z]{1,64}$`)

// InvocationTarget returns the target of invocation id (service, handler, and the key of an
// object or workflow), from Restate's sys_invocation table, and false when Restate has no such
// invocation (never made, or purged). Every error is a gRPC status error.
func (a *Admin) InvocationTarget(ctx context.Context, id string) (Target, bool, error) {
	if !invocationID.MatchString(id) {
		return Target{}, false, status.Errorf(codes.InvalidArgument, "%q is not an invocation id (inv_ and base62)", id)
	}
	var rows []struct {
		Service string  `json:"target_service_name"`
		Handler string  `json:"target_handler_name"`
		Key     *string `json:"target_service_key"`
		Type    string  `json:"target_service_ty"`
	}
	q := "SELECT target_service_name, target_handler_name, target_service_key, target_service_ty FROM sys_invocation WHERE id = '" + id + "'"
	if err := a.query(ctx, q, &rows); err != nil {
		if st := status.Convert(err); strings.Contains(st.Message(), "non valid invocation id") {
			// Restate 1.7 answers 500 "Datafusion error: External error: non valid invocation id"
			// for an id of the right form that does not decode.
			return Target{}, false, status.Errorf(codes.InvalidArgument, "%q is not a valid invocation id", id)
		}
		return Target{}, false, err
	}
	if len(rows) == 0 {
		return Target{}, false, nil
	}
	r := rows[0]
	t := Target{Service: r.Service, Handler: r.Handler, Keyed: r.Type != "service"}
	if r.Key != nil {
		t.Key, t.Keyed = *r.Key, true
	}
	return t, true, nil
}

// query is Query with gRPC status errors.
func (a *Admin) query(ctx context.Context, sql string, rows any) error {
	b, _ := json.Marshal(map[string]string{"query": sql})
	resp, body, err := a.send(ctx, http.MethodPost, "/query", b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return status.Errorf(httpCodeToGRPC(resp.StatusCode, ""), "restate admin answered %d to a query: %s", resp.StatusCode, adminMessage(body))
	}
	var out struct {
		Rows json.RawMessage `json:"rows"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return status.Errorf(codes.Internal, "restate admin: unreadable query answer %q: %v", truncate(body), err)
	}
	if err := json.Unmarshal(out.Rows, rows); err != nil {
		return status.Errorf(codes.Internal, "restate admin: unreadable query rows %q: %v", truncate(out.Rows), err)
	}
	return nil
}
