package testenv

import (
	"context"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Span is one exported span, ids in hex as W3C traceparent writes them.
type Span struct {
	TraceID, SpanID, Parent string
	Name                    string
	Kind                    tracepb.Span_SpanKind
	// Service is the resource's service.name; Resource and Attrs hold every string, int and
	// bool attribute as text.
	Service         string
	Resource, Attrs map[string]string
	Error           bool // status code ERROR
}

// OTLPReceiver is an in-process OTLP collector that keeps every span it is sent, over
// OTLP/gRPC (GRPCAddr) and OTLP/HTTP (HTTPURL + "/v1/traces").
type OTLPReceiver struct {
	coltrace.UnimplementedTraceServiceServer
	GRPCAddr string
	HTTPURL  string

	srv  *grpc.Server
	web  *httptest.Server
	mu   sync.Mutex
	kept []Span
}

// StartOTLPReceiver listens on loopback ports; Close stops it.
func StartOTLPReceiver() (*OTLPReceiver, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &OTLPReceiver{GRPCAddr: l.Addr().String(), srv: grpc.NewServer()}
	coltrace.RegisterTraceServiceServer(r.srv, r)
	go r.srv.Serve(l)
	r.web = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, err := io.ReadAll(req.Body)
		if err == nil {
			err = r.Add(b)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	r.HTTPURL = r.web.URL
	return r, nil
}

// Close stops both servers.
func (r *OTLPReceiver) Close() {
	r.srv.Stop()
	r.web.Close()
}

// Export is the OTLP/gRPC TraceService.
func (r *OTLPReceiver) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	r.keep(DecodeSpans(req))
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// Add keeps the spans of a protobuf ExportTraceServiceRequest, as OTLP/HTTP posts it.
func (r *OTLPReceiver) Add(b []byte) error {
	var req coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return err
	}
	r.keep(DecodeSpans(&req))
	return nil
}

func (r *OTLPReceiver) keep(spans []Span) {
	r.mu.Lock()
	r.kept = append(r.kept, spans...)
	r.mu.Unlock()
}

// Spans returns the spans kept so far.
func (r *OTLPReceiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.kept...)
}

// DecodeSpans flattens an export request.
func DecodeSpans(req *coltrace.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				out = append(out, Span{
					TraceID:  hex.EncodeToString(s.GetTraceId()),
					SpanID:   hex.EncodeToString(s.GetSpanId()),
					Parent:   hex.EncodeToString(s.GetParentSpanId()),
					Name:     s.GetName(),
					Kind:     s.GetKind(),
					Service:  res["service.name"],
					Resource: res,
					Attrs:    attrMap(s.GetAttributes()),
					Error:    s.GetStatus().GetCode() == tracepb.Status_STATUS_CODE_ERROR,
				})
			}
		}
	}
	return out
}

func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = v.GetStringValue()
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = strconv.FormatBool(v.GetBoolValue())
		}
	}
	return m
}
