package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

// AnnotationPrefix starts every annotation the injector and the sidecar read.
const AnnotationPrefix = "restate-grpc.io/"

// Interception modes: how the app's outbound calls reach the sidecar.
const (
	InterceptExplicit = "explicit"
	InterceptProxyEnv = "proxy-env"
	InterceptIPTables = "iptables"
)

// Annotation is one pod annotation of the schema: the config field it sets (or the injector
// setting it is), the values it takes, and what it does. The README's reference table is
// rendered from Annotations, and a test keeps the two the same.
type Annotation struct {
	Name   string // after the prefix
	Sets   string // the config field, or "injector: ..." for what only the injector reads
	Values string
	Doc    string
}

// Key is the annotation's full key.
func (a Annotation) Key() string { return AnnotationPrefix + a.Name }

// Annotations is the schema, in the README's order.
var Annotations = []Annotation{
	{"inject", "injector", "`true` \\| `false`", "inject the sidecar into this pod"},
	{"interception", "injector", "`explicit` \\| `proxy-env` \\| `iptables`", "how the app's calls reach the sidecar; default from the injector's config"},
	{"outbound-ports", "injector: `sidecar iptables --ports`", "ports, comma-separated", "iptables mode: the destination ports captured; empty: every TCP port"},
	{"app-port", "`inbound.app` (127.0.0.1:PORT)", "a port", "the app's gRPC port, which the inbound side calls"},
	{"ingress-url", "`outbound.ingress`", "URL, or URLs comma-separated", "the Restate ingress (of a cluster: each node's, or a headless Service's); default from the injector's config"},
	{"admin-url", "`outbound.admin`, `inbound.register.admin`", "URL, or URLs comma-separated", "the Restate admin API (of a cluster, as `ingress-url`); with an inbound section the sidecar registers the pod at `http://$(POD_IP):9080`"},
	{"outbound", "`outbound`", "YAML or JSON", "the outbound section of the config file: routes, unmatched, upstreams, limits, ..."},
	{"inbound", "`inbound`", "YAML or JSON", "the inbound section of the config file: services, register, ..."},
	{"identity-keys", "`inbound.identityKeys`", "keys, comma-separated", "Restate request-identity keys (publickeyv1_...): unsigned requests are refused"},
	{"otlp-endpoint", "`tracing.otlpEndpoint`", "URL", "the OTLP collector for the sidecar's spans"},
	{"log-level", "`logLevel`", "`debug` \\| `info` \\| `warn` \\| `error`", "the sidecar's log level"},
	{"proxy-cpu", "injector: CPU request", "a quantity (`100m`)", "the sidecar container's CPU request; default from the injector's config"},
	{"proxy-cpu-limit", "injector: CPU limit", "a quantity", "the sidecar container's CPU limit"},
	{"proxy-memory", "injector: memory request", "a quantity (`64Mi`)", "the sidecar container's memory request"},
	{"proxy-memory-limit", "injector: memory limit", "a quantity", "the sidecar container's memory limit"},
	{"status", "written by the injector", "`injected` \\| `skipped: REASON`", "what the injector did with the pod and why; never set it yourself"},
}

// Pod is what a pod's annotations say: the injector's settings and the sidecar's config.
type Pod struct {
	Inject        bool
	Interception  string   // one of the Intercept* modes; default explicit
	OutboundPorts []uint16 // iptables mode; empty: every port
	// Resources of the sidecar container, as Kubernetes quantities; empty: the injector's
	// default.
	CPU, CPULimit, Memory, MemoryLimit string
	Config                             *Config
}

// ParseAnnotations reads a pod's annotations: the restate-grpc.io/ ones (others are ignored)
// make the sidecar's config, defaults filled in and validated against env. Every problem is
// reported at once as an *AnnotationError, each naming its annotation.
func ParseAnnotations(ann map[string]string, env Env) (*Pod, error) {
	known := map[string]bool{}
	for _, a := range Annotations {
		known[a.Key()] = true
	}
	var errs AnnotationError
	bad := func(name, format string, a ...any) {
		errs.Problems = append(errs.Problems, Problem{AnnotationPrefix + name, fmt.Sprintf(format, a...)})
	}
	get := func(name string) (string, bool) {
		v, ok := ann[AnnotationPrefix+name]
		return strings.TrimSpace(v), ok
	}
	var keys []string
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) && !known[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		bad(strings.TrimPrefix(k, AnnotationPrefix), "unknown annotation (known: %s)", knownNames())
	}

	p := &Pod{Interception: InterceptExplicit, Config: &Config{}}
	if v, ok := get("inject"); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("inject", "want true or false, got %q", v)
		}
		p.Inject = b
	}
	if v, ok := get("interception"); ok {
		switch v {
		case InterceptExplicit, InterceptProxyEnv, InterceptIPTables:
			p.Interception = v
		default:
			bad("interception", "%q is not one of %s, %s, %s", v, InterceptExplicit, InterceptProxyEnv, InterceptIPTables)
		}
	}
	if v, ok := get("outbound-ports"); ok && v != "" {
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
			if err != nil || n == 0 {
				bad("outbound-ports", "want ports 1-65535, comma-separated, got %q", s)
				continue
			}
			p.OutboundPorts = append(p.OutboundPorts, uint16(n))
		}
		if p.Interception != InterceptIPTables {
			bad("outbound-ports", "only iptables interception captures ports; set restate-grpc.io/interception: iptables")
		}
	}
	for _, r := range []struct {
		name string
		to   *string
	}{{"proxy-cpu", &p.CPU}, {"proxy-cpu-limit", &p.CPULimit}, {"proxy-memory", &p.Memory}, {"proxy-memory-limit", &p.MemoryLimit}} {
		if v, ok := get(r.name); ok {
			if _, err := resource.ParseQuantity(v); err != nil {
				bad(r.name, "want a Kubernetes quantity such as 100m or 64Mi, got %q", v)
			}
			*r.to = v
		}
	}

	// fields records which annotation set a config field, so its problems name the annotation.
	c := p.Config
	fields := map[string]string{}
	section := func(name string, into any) bool {
		v, ok := get(name)
		if !ok {
			return false
		}
		if err := yaml.UnmarshalStrict([]byte(v), into); err != nil {
			bad(name, "want the %s section of the config file as YAML or JSON: %v", name, err)
		}
		fields[name] = name
		return true
	}
	if section("outbound", &c.Outbound) && c.Outbound == nil {
		c.Outbound = &Outbound{}
	}
	if section("inbound", &c.Inbound) && c.Inbound == nil {
		c.Inbound = &Inbound{}
	}
	// A single-valued annotation for a field its section also sets would leave one of them
	// unread: refuse the pair.
	set := func(name, field string, to *string, v string) {
		if *to != "" && *to != v {
			bad(name, "%s is set by restate-grpc.io/%s too: set it in one place", field, fields[strings.SplitN(field, ".", 2)[0]])
			return
		}
		*to = v
		fields[field] = name
	}
	setURLs := func(name, field string, to *URLs, v string) {
		s := to.String()
		set(name, field, &s, SplitURLs(v).String())
		*to = SplitURLs(s)
	}
	if v, ok := get("ingress-url"); ok {
		if c.Outbound == nil {
			c.Outbound = &Outbound{}
		}
		setURLs("ingress-url", "outbound.ingress", &c.Outbound.Ingress, v)
	}
	if p.Interception != InterceptExplicit && c.Outbound == nil {
		c.Outbound = &Outbound{} // the app's calls come to the listener: passthrough at least
	}
	if v, ok := get("app-port"); ok {
		if n, err := strconv.ParseUint(v, 10, 16); err != nil || n == 0 {
			bad("app-port", "want a port 1-65535, got %q", v)
		}
		if c.Inbound == nil {
			c.Inbound = &Inbound{}
		}
		set("app-port", "inbound.app", &c.Inbound.App, net.JoinHostPort("127.0.0.1", v))
	}
	if v, ok := get("admin-url"); ok {
		if c.Outbound != nil {
			setURLs("admin-url", "outbound.admin", &c.Outbound.Admin, v)
		}
		if in := c.Inbound; in != nil {
			if in.Register == nil {
				_, port, err := net.SplitHostPort(or(in.Listen, DefaultInboundListen))
				if err != nil {
					port = "9080" // inbound.listen's own problem is reported by validate
				}
				in.Register = &Register{URI: "http://$(POD_IP):" + port}
			}
			setURLs("admin-url", "inbound.register.admin", &in.Register.Admin, v)
		}
	}
	if v, ok := get("identity-keys"); ok {
		if c.Inbound == nil {
			bad("identity-keys", "needs an inbound section (restate-grpc.io/inbound): the keys check Restate's requests to the app")
		} else if len(c.Inbound.IdentityKeys) > 0 {
			bad("identity-keys", "inbound.identityKeys is set by restate-grpc.io/inbound too: set it in one place")
		} else {
			for _, k := range strings.Split(v, ",") {
				c.Inbound.IdentityKeys = append(c.Inbound.IdentityKeys, strings.TrimSpace(k))
			}
			fields["inbound.identityKeys"] = "identity-keys"
		}
	}
	if v, ok := get("otlp-endpoint"); ok {
		c.Tracing = &Tracing{OTLPEndpoint: v}
		fields["tracing"] = "otlp-endpoint"
	}
	if v, ok := get("log-level"); ok {
		c.LogLevel = v
		fields["logLevel"] = "log-level"
	}
	if c.Outbound == nil && c.Inbound == nil && p.Inject {
		bad("inject", "the sidecar has nothing to do: set restate-grpc.io/outbound (or ingress-url, or a transparent interception) or restate-grpc.io/inbound (with app-port)")
	}
	if len(errs.Problems) > 0 {
		return nil, &errs // a section that did not parse would only add noise below
	}
	// A URL that is missing is asked for by its own annotation.
	if o := c.Outbound; o != nil {
		if len(o.Ingress) == 0 {
			fields["outbound.ingress"] = "ingress-url"
		}
		if len(o.Admin) == 0 {
			fields["outbound.admin"] = "admin-url"
		}
	}
	c.setDefaults(env)
	var ce *Error
	if err := c.validate(env); errors.As(err, &ce) {
		for _, pr := range ce.Problems {
			errs.Problems = append(errs.Problems, Problem{AnnotationPrefix + annotationOf(pr.Field, fields), pr.Field + ": " + pr.Message})
		}
		return nil, &errs
	}
	return p, nil
}

// annotationOf is the annotation that set field: the one recorded for its longest prefix.
func annotationOf(field string, fields map[string]string) string {
	for f := field; ; {
		if a, ok := fields[f]; ok {
			return a
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			return strings.SplitN(field, ".", 2)[0]
		}
		f = f[:i]
	}
}

func knownNames() string {
	names := make([]string, len(Annotations))
	for i, a := range Annotations {
		names[i] = a.Name
	}
	return strings.Join(names, ", ")
}

// AnnotationError lists every wrong annotation of a pod.
type AnnotationError struct {
	Problems []Problem // Field is the annotation's key
}

func (e *AnnotationError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Field + ": " + p.Message)
	}
	return b.String()
}

// ParseDownwardAPI reads a downward-API annotations (or labels) file: one key="value" line per
// annotation, the value quoted as Go's %q quotes it, which is how the kubelet writes it.
func ParseDownwardAPI(b []byte) (map[string]string, error) {
	m := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		k, q, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key=\"value\", got %q", i+1, line)
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			return nil, fmt.Errorf("line %d (%s): the value is not quoted as the kubelet quotes it: %v", i+1, k, err)
		}
		m[k] = v
	}
	return m, nil
}

// LoadAnnotations reads the sidecar's config from a downward-API file of the pod's
// annotations, against this process's environment and files.
func LoadAnnotations(name string) (*Config, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, err
	}
	ann, err := ParseDownwardAPI(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p, err := ParseAnnotations(ann, Process)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return p.Config, nil
}
