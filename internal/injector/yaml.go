package injector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// templatePaths is where each workload kind holds the pod it makes.
var templatePaths = map[string][]string{
	"Pod":                   nil,
	"Deployment":            {"spec", "template"},
	"StatefulSet":           {"spec", "template"},
	"DaemonSet":             {"spec", "template"},
	"ReplicaSet":            {"spec", "template"},
	"ReplicationController": {"spec", "template"},
	"Job":                   {"spec", "template"},
	"CronJob":               {"spec", "jobTemplate", "spec", "template"},
	"PodTemplate":           {"template"},
}

// docSeparator splits a YAML stream into documents.
var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*(#.*)?$`)

// InjectYAML injects the pods of a YAML stream (Pods, the workloads that make pods, and Lists
// of them) as the webhook would, and writes the stream to w. Documents without a pod asking
// for the sidecar are written as they came; others are re-rendered. namespace is the one of
// objects that name none.
func (in *Injector) InjectYAML(r io.Reader, w io.Writer, namespace string, native bool) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	docs := docSeparator.Split(string(b), -1)
	n := 0
	for i, doc := range docs {
		if len(bytes.TrimSpace([]byte(stripComments(doc)))) == 0 {
			continue
		}
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		changed, err := in.injectObject(obj, namespace, native)
		if err != nil {
			return fmt.Errorf("document %d: %w", i+1, err)
		}
		if n > 0 {
			io.WriteString(w, "---\n")
		}
		n++
		if !changed {
			out := doc
			if len(out) > 0 && out[0] == '\n' {
				out = out[1:]
			}
			if _, err := io.WriteString(w, out); err != nil {
				return err
			}
			continue
		}
		out, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		if _, err := w.Write(out); err != nil {
			return err
		}
	}
	return nil
}

var comment = regexp.MustCompile(`(?m)#.*$`)

func stripComments(doc string) string { return comment.ReplaceAllString(doc, "") }

// injectObject injects obj's pod in place; it reports whether anything changed.
func (in *Injector) injectObject(obj map[string]any, namespace string, native bool) (bool, error) {
	kind, _ := obj["kind"].(string)
	if strings.HasSuffix(kind, "List") {
		items, _ := obj["items"].([]any)
		changed := false
		for i, it := range items {
			m, ok := it.(map[string]any)
			if !ok {
				continue
			}
			c, err := in.injectObject(m, namespace, native)
			if err != nil {
				return false, fmt.Errorf("items[%d]: %w", i, err)
			}
			changed = changed || c
		}
		return changed, nil
	}
	path, ok := templatePaths[kind]
	if !ok {
		return false, nil
	}
	meta, _ := obj["metadata"].(map[string]any)
	name, _ := meta["name"].(string)
	if ns, _ := meta["namespace"].(string); ns != "" {
		namespace = ns
	}
	parent, key := obj, ""
	tmpl := obj
	for _, p := range path {
		next, ok := tmpl[p].(map[string]any)
		if !ok {
			return false, nil // no pod in it
		}
		parent, key, tmpl = tmpl, p, next
	}
	raw, err := json.Marshal(tmpl)
	if err != nil {
		return false, err
	}
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		return false, fmt.Errorf("%s %s: its pod: %w", kind, name, err)
	}
	injected, err := in.Inject(&pod, Target{Namespace: namespace, Native: native})
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if injected == &pod {
		return false, nil
	}
	var out map[string]any
	if kind == "Pod" {
		// A Pod keeps its own fields (apiVersion, kind, status) as they were.
		injected.TypeMeta = pod.TypeMeta
	} else {
		out = map[string]any{}
	}
	b, err := json.Marshal(templateOf(injected, kind == "Pod"))
	if err != nil {
		return false, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return false, err
	}
	if kind == "Pod" {
		for k := range obj {
			delete(obj, k)
		}
		for k, v := range out {
			obj[k] = v
		}
		return true, nil
	}
	parent[key] = out
	return true, nil
}

// templateOf is what goes back into the document: the whole pod, or a workload's template
// (metadata and spec only).
func templateOf(pod *corev1.Pod, whole bool) any {
	if whole {
		return pod
	}
	return corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}
}
