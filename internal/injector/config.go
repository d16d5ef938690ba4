package injector

import (
	"errors"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// Config is the injector's own config: what every pod gets unless its annotations say
// otherwise.
type Config struct {
	// Image is the sidecar's image; the binary in it is /usr/local/bin/sidecar.
	Image           string            `json:"image,omitempty"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`
	// Interception is the default of restate-grpc.io/interception.
	Interception string `json:"interception,omitempty"`
	// IngressURL and AdminURL are the defaults of restate-grpc.io/ingress-url and admin-url.
	// Each is one URL, several (a Restate cluster's nodes, a list or comma-separated), or one
	// whose name resolves to every node (a headless Service).
	IngressURL config.URLs `json:"ingressURL,omitempty"`
	AdminURL   config.URLs `json:"adminURL,omitempty"`
	// Resources of the sidecar container; the proxy-cpu and proxy-memory annotations win.
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
	// OnInvalid is what a pod with bad annotations gets: reject (the API server refuses it,
	// saying which annotation is wrong) or skip (it runs without the sidecar, the reason in
	// its restate-grpc.io/status annotation).
	OnInvalid string `json:"onInvalid,omitempty"`
	// NativeSidecars is auto (native sidecars when the API server is 1.29 or later), true or
	// false.
	NativeSidecars string `json:"nativeSidecars,omitempty"`
	// NoProxy is added to no_proxy in proxy-env mode: destinations the app reaches directly.
	NoProxy []string `json:"noProxy,omitempty"`
}

// Policies and settings of Config.
const (
	OnInvalidReject = "reject"
	OnInvalidSkip   = "skip"

	NativeAuto = "auto"
)

// DefaultImage is the sidecar image of this build; its tag is set with -ldflags
// "-X github.com/restate-grpc/restate-grpc/internal/injector.DefaultImage=ghcr.io/restate-grpc/sidecar:v1.2.3".
var DefaultImage = "ghcr.io/restate-grpc/sidecar:latest"

// LoadConfig reads the injector's config file (YAML or JSON); an empty name is all defaults.
func LoadConfig(name string) (*Config, error) {
	var b []byte
	if name != "" {
		var err error
		if b, err = os.ReadFile(name); err != nil {
			return nil, err
		}
	}
	c, err := ParseConfig(b)
	if err != nil && name != "" {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return c, err
}

// ParseConfig reads an injector config, fills in defaults and validates it. Unknown fields
// are errors.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, fmt.Errorf("invalid injector config: %w", err)
	}
	if c.Image == "" {
		c.Image = DefaultImage
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if c.Interception == "" {
		c.Interception = config.InterceptProxyEnv
	}
	if c.OnInvalid == "" {
		c.OnInvalid = OnInvalidReject
	}
	if c.NativeSidecars == "" {
		c.NativeSidecars = NativeAuto
	}
	if c.Resources.Requests == nil {
		c.Resources.Requests = corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("100m"),
			corev1.ResourceMemory: resource.MustParse("64Mi"),
		}
	}
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")}
	}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	switch c.Interception {
	case config.InterceptExplicit, config.InterceptProxyEnv, config.InterceptIPTables:
	default:
		bad("interception", "%q is not one of explicit, proxy-env, iptables", c.Interception)
	}
	switch c.ImagePullPolicy {
	case corev1.PullAlways, corev1.PullIfNotPresent, corev1.PullNever:
	default:
		bad("imagePullPolicy", "%q is not one of Always, IfNotPresent, Never", c.ImagePullPolicy)
	}
	if c.OnInvalid != OnInvalidReject && c.OnInvalid != OnInvalidSkip {
		bad("onInvalid", "%q is not one of reject, skip", c.OnInvalid)
	}
	if c.NativeSidecars != NativeAuto && c.NativeSidecars != "true" && c.NativeSidecars != "false" {
		bad("nativeSidecars", "%q is not one of auto, true, false", c.NativeSidecars)
	}
	for name, us := range map[string]config.URLs{"ingressURL": c.IngressURL, "adminURL": c.AdminURL} {
		for _, u := range us {
			if err := config.CheckBaseURL(u); err != nil {
				bad(name, "%v", err)
			}
		}
	}
	for _, h := range c.NoProxy {
		if h == "" || strings.ContainsAny(h, ", ") {
			bad("noProxy", "%q: want one host, domain (.example.com) or IP per entry", h)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid injector config: %w", errors.Join(errs...))
	}
	return &c, nil
}
