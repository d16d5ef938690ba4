package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jwt "github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/restate-grpc/restate-grpc/api/invocationsv1"
	"github.com/restate-grpc/restate-grpc/internal/config"
	"github.com/restate-grpc/restate-grpc/internal/sidecar"
	"github.com/restate-grpc/restate-grpc/internal/testservice/testpb"
)

// journaledHeaders returns the request headers Restate stored for an invocation.
func journaledHeaders(t *testing.T, id string) string {
	var rows []struct {
		Entry string `json:"entry_json"`
	}
	env.adminQuery(t, fmt.Sprintf("SELECT entry_json FROM sys_journal WHERE id = '%s' AND index = 0", id), &rows)
	if len(rows) != 1 {
		t.Fatalf("no input entry for %s", id)
	}
	return rows[0].Entry
}

// TestCredentialsStayOutOfTheJournal: Restate stores every request header in its journal, so
// credentials are withheld unless a route allows them; the test reads the stored headers back.
func TestCredentialsStayOutOfTheJournal(t *testing.T) {
	ctx := testCtx(t)
	secrets := []string{"authorization", "Bearer SECRET-1", "cookie", "session=SECRET-2", "proxy-authorization", "Basic SECRET-3", "x-api-key", "SECRET-4"}
	resp, hdr, err := invoke(ctx, env.conn, echoCall, &testpb.Req{Text: uniq(t, "secret")}, append(secrets, "x-tenant", "acme")...)
	if err != nil {
		t.Fatal(err)
	}
	stored := journaledHeaders(t, header(hdr, idHeader))
	if strings.Contains(stored, "SECRET") {
		t.Errorf("credentials stored in Restate's journal: %s", stored)
	}
	if !strings.Contains(stored, `"x-tenant","value":"acme"`) {
		t.Errorf("ordinary metadata not forwarded: %s", stored)
	}
	for k, v := range resp.GetMetadata() {
		if strings.Contains(v, "SECRET") {
			t.Errorf("the callee got credential %s", k)
		}
	}

	allowing, err := startSidecar(context.Background(), fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  routes: [{match: rgtest.v1.Echo/Call, allowMetadata: [authorization]}]
`, env.restate.Ingress))
	if err != nil {
		t.Fatal(err)
	}
	resp, hdr, err = invoke(ctx, dial(allowing), echoCall, &testpb.Req{Text: uniq(t, "allowed")}, secrets...)
	if err != nil {
		t.Fatal(err)
	}
	stored = journaledHeaders(t, header(hdr, idHeader))
	if !strings.Contains(stored, "SECRET-1") || strings.Contains(stored, "SECRET-2") {
		t.Errorf("with allowMetadata [authorization] stored %s; want authorization and no cookie", stored)
	}
	if got := resp.GetMetadata()["authorization"]; got != "Bearer SECRET-1" {
		t.Errorf("callee authorization = %q, want the allowed header", got)
	}
}

// gate is a TLS front for a Restate API that wants a bearer token, as a managed Restate would.
func gate(t *testing.T, target, token string) (frontURL string, caFile string) {
	u, _ := url.Parse(target)
	rp := httputil.NewSingleHostReverseProxy(u)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if vs := r.Header.Values("Authorization"); len(vs) != 1 || vs[0] != "Bearer "+token {
			http.Error(w, fmt.Sprintf(`{"code":401,"message":"bad token: want one Authorization, got %d"}`, len(vs)), http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return ts.URL, caFile
}

// TestTLSAndBearerToken: the ingress and admin clients present a bearer token over TLS
// verified with a given CA.
func TestTLSAndBearerToken(t *testing.T) {
	ingress, ca := gate(t, env.restate.Ingress, "tok-1")
	admin, adminCA := gate(t, env.restate.Admin, "tok-1")
	both := filepath.Join(t.TempDir(), "both.pem")
	a, _ := os.ReadFile(ca)
	b, _ := os.ReadFile(adminCA)
	os.WriteFile(both, append(a, b...), 0o600)
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("tok-1\n"), 0o600)
	cfg := func(access string) string {
		return fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  admin: %s
  access: %s
  routes: [{match: rgtest.v1.Echo/Call}]
`, ingress, admin, access)
	}
	tests := []struct {
		name   string
		access string
		code   codes.Code
		msg    string
	}{
		{"token and CA", fmt.Sprintf("{bearerTokenFile: %s, caFile: %s}", tokenFile, both), codes.OK, ""},
		{"wrong token", fmt.Sprintf("{bearerToken: nope, caFile: %s}", both), codes.Unauthenticated, "bad token"},
		{"unknown CA", "{bearerToken: tok-1}", codes.Unavailable, "certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := startSidecar(context.Background(), cfg(tc.access))
			if err != nil {
				t.Fatal(err)
			}
			conn := dial(s)
			ctx := testCtx(t)
			idem := uniq(t, "tls")
			_, _, err = invoke(ctx, conn, echoCall, &testpb.Req{Text: idem}, "idempotency-key", idem)
			if st := status.Convert(err); st.Code() != tc.code || !strings.Contains(st.Message(), tc.msg) {
				t.Fatalf("call: %v, want %v %q", st, tc.code, tc.msg)
			}
			if tc.code != codes.OK {
				return
			}
			// The admin API too: cancelling a finished invocation reaches Restate and says so.
			_, err = pb.NewInvocationsClient(conn).Cancel(ctx, callTarget("rgtest.v1.Echo", "", "Call", idem))
			if st := status.Convert(err); st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "already completed") {
				t.Errorf("cancel through the TLS admin: %v, want FailedPrecondition already completed", st)
			}
		})
	}
}

// TestCallerAuthorizationWithToken: with a bearer token of the sidecar's own and a route that
// allows the caller's authorization, each arrives where it belongs: the sidecar's alone
// authenticates to the ingress (the gate wants exactly one Authorization), the caller's reaches
// the callee app as authorization, and the sidecar's token never reaches the app.
func TestCallerAuthorizationWithToken(t *testing.T) {
	ingress, ca := gate(t, env.restate.Ingress, "tok-1")
	s, err := startSidecar(context.Background(), fmt.Sprintf(`
outbound:
  listen: 127.0.0.1:0
  ingress: %s
  access: {bearerToken: tok-1, caFile: %s}
  routes: [{match: rgtest.v1.Echo/Call, allowMetadata: [authorization, x-api-key]}]
`, ingress, ca))
	if err != nil {
		t.Fatal(err)
	}
	resp, _, err := invoke(testCtx(t), dial(s), echoCall, &testpb.Req{Text: uniq(t, "authz")},
		"authorization", "Bearer caller", "x-api-key", "key-1")
	if err != nil {
		t.Fatal(err)
	}
	md := resp.GetMetadata()
	if md["authorization"] != "Bearer caller" || md["x-api-key"] != "key-1" {
		t.Errorf("the callee got authorization %q, x-api-key %q; want the caller's", md["authorization"], md["x-api-key"])
	}
	for k, v := range md {
		if strings.Contains(v, "tok-1") {
			t.Errorf("the sidecar's own token reached the callee as %s", k)
		}
	}
}

// TestOutboundListensOnLoopback: with no listen address the outbound listener takes the
// loopback default, so only the pod's own app can call out through it.
func TestOutboundListensOnLoopback(t *testing.T) {
	cfg, err := config.Parse([]byte(`outbound: {ingress: "http://127.0.0.1:1"}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := sidecar.Start(ctx, sidecar.Options{Config: cfg, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); s.Wait() }()
	if ip := s.OutboundAddr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		t.Errorf("outbound listens on %v, want loopback", s.OutboundAddr())
	}
}

// TestIdentitySignatures: an inbound endpoint with identity keys accepts requests signed with
// Restate's key and refuses unsigned ones and ones signed with another key.
func TestIdentitySignatures(t *testing.T) {
	pemBytes, err := os.ReadFile(filepath.Join(env.dir, "identity.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	sign := func(k ed25519.PrivateKey, aud string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{
			"aud": aud, "nbf": time.Now().Add(-time.Second).Unix(), "exp": time.Now().Add(time.Minute).Unix(),
		})
		tok.Header["kid"] = env.restate.IdentityKey
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name string
		jwt  string
		want int
	}{
		{"signed by Restate's key", sign(key.(ed25519.PrivateKey), "/discover"), http.StatusOK},
		{"unsigned", "", http.StatusUnauthorized},
		{"signed by another key", sign(other, "/discover"), http.StatusUnauthorized},
		{"signed for another path", sign(key.(ed25519.PrivateKey), "/invoke/x/y"), http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, "http://"+env.inbound.InboundAddr().String()+"/discover", nil)
			req.Header.Set("Accept", "application/vnd.restate.endpointmanifest.v2+json")
			if tc.jwt != "" {
				req.Header.Set("X-Restate-Signature-Scheme", "v1")
				req.Header.Set("X-Restate-Jwt-V1", tc.jwt)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
