package durable

import (
	"path"
	"strings"

	"github.com/restate-grpc/restate-grpc/internal/config"
)

// routes matches full methods to the first rule whose glob fits.
type routes []config.Route

// match returns the first route matching fullMethod ("/pkg.Service/Method"), or nil. A glob
// without a "/" matches service names: "*" matches every call, "orders.v1.*" a package.
func (rs routes) match(fullMethod string) *config.Route {
	if i := rs.index(fullMethod); i >= 0 {
		return &rs[i]
	}
	return nil
}

// index is match's route's index, or -1.
func (rs routes) index(fullMethod string) int {
	m := strings.TrimPrefix(fullMethod, "/")
	svc, _, _ := strings.Cut(m, "/")
	for i := range rs {
		pattern, subject := rs[i].Match, m
		if !strings.Contains(pattern, "/") {
			subject = svc
		}
		if ok, _ := path.Match(pattern, subject); ok {
			return i
		}
	}
	return -1
}

// splitMethod splits "/pkg.Service/Method" into its service and method names.
func splitMethod(fullMethod string) (service, method string) {
	service, method, _ = strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	return service, method
}
