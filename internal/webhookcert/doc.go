// Package webhookcert gives the injector's webhook server its TLS certificate, one of two ways.
// The API server calls a webhook over TLS and trusts only the caBundle of its
// MutatingWebhookConfiguration, so whichever way is used, the bundle must verify every
// certificate any replica serves, also while certificates rotate.
//
// # Self-signed (Manager)
//
// No other component is needed: the injector keeps its own CA. NewManager loads the CA and the
// serving certificate from a Secret (type kubernetes.io/tls: tls.crt and tls.key are the serving
// pair, ca.crt the bundle, ca.key the signing CA's key) or, when there is none, creates an
// ECDSA P-256 CA and a serving certificate for the Service (svc, svc.ns, svc.ns.svc,
// svc.ns.svc.cluster.local) and creates the Secret. Replicas that start at once race to create
// it; the one whose Create loses loads the winner's. Every change to the Secret is an update
// carrying the resourceVersion it was decided from, so of two replicas renewing at once one
// wins and the other decides again from what the winner wrote.
//
// The Manager then writes ca.crt into the caBundle of every webhook of the
// MutatingWebhookConfiguration (only when it differs), and serves the Secret's certificate
// through GetCertificate only once that succeeded. Run reads the Secret again every
// RefreshInterval: that picks up what another replica renewed, renews the serving certificate
// when less than a third of its lifetime remains, and renews the CA likewise. A rotation never
// leaves a replica serving what the bundle does not verify:
//
//   - a new CA is put first into ca.crt, the old one stays after it until it expires (no
//     serving certificate outlives the CA that signed it), and the bundle is written into the
//     webhook configuration before any certificate the new CA signs is served;
//   - the new CA signs only once it has been in the webhook configuration for a refresh
//     interval, because the API server reads webhook configurations through an informer.
//     Then the serving certificate moves to it.
//
// A caBundle that something else rewrites (a replace of the configuration without it; an
// apply of a manifest that holds none leaves it) is written back at the next refresh; until
// then the API server cannot reach the webhook.
//
// The injector needs RBAC to get, create and update Secrets in its namespace and to get and
// update its MutatingWebhookConfiguration. Deleting the Secret makes the replicas create a new
// CA (certificates signed by the old one stop verifying once the bundle is replaced).
//
// # cert-manager (Reloader)
//
// A cert-manager Certificate for the same names writes its Secret; cert-manager's CA injector
// writes the caBundle (annotation cert-manager.io/inject-ca-from: NAMESPACE/CERTIFICATE on the
// MutatingWebhookConfiguration). The injector mounts the Secret and serves it with a
// Reloader: GetCertificate serves tls.crt and tls.key of the directory and reads them again
// when they change (the kubelet replaces a mounted Secret's files at once by swapping its
// ..data symlink), at most every ReloadRecheck. When ca.crt is there too, a pair must verify
// against it. A pair that does not load is logged, and the last good one goes on being served.
//
// Have the serving Certificate issued by a CA Issuer (whose CA a selfSigned Issuer signs), not
// by a selfSigned Issuer straight: then a renewed serving certificate keeps ca.crt, and the
// bundle verifies the old one and the new. A self-signed serving certificate is its own CA:
// each renewal replaces the bundle at once, while the replicas serve the old certificate until
// the kubelet has swapped the new files in (a minute or more), and the API server refuses them.
package webhookcert
