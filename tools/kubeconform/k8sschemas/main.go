// Command k8sschemas turns the OpenAPI v2 document of the Kubernetes API (api/openapi-spec/
// swagger.json in the k8s.io/kubernetes module) into the strict, standalone JSON schemas
// kubeconform reads: one file per kind, named as kubeconform's {{.ResourceKind}}{{.KindSuffix}}
// (deployment-apps-v1.json, service-v1.json, ...). It does what kubeconform's
// openapi2jsonschema.py does with --strict --standalone, in Go, so that `make lint-deploy` needs
// neither Python nor the network (see tools/kubeconform/README.md):
//
//   - strict: every object schema with properties gets additionalProperties: false (unless the
//     API marks it x-kubernetes-preserve-unknown-fields), so an unknown or misspelt field fails;
//   - standalone: each file carries, under "definitions", every definition its kind reaches, so
//     kubeconform resolves its $refs inside the file;
//   - IntOrString accepts a string or an integer, Quantity a string or a number (YAML's `cpu: 2`);
//   - apiVersion and kind are pinned to the kind's own values.
//
// Usage: k8sschemas -swagger swagger.json -out DIR. It exits 1 with the reason when the document
// cannot be read or a file cannot be written.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const (
	intOrString = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
	quantity    = "io.k8s.apimachinery.pkg.api.resource.Quantity"
	refPrefix   = "#/definitions/"
)

type gvk struct {
	Group   string `json:"group"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
}

func main() {
	swagger := flag.String("swagger", "", "the Kubernetes API's swagger.json")
	out := flag.String("out", "", "directory to write the schemas into")
	flag.Parse()
	if *swagger == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: k8sschemas -swagger swagger.json -out DIR")
		os.Exit(2)
	}
	n, err := run(*swagger, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8sschemas:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "k8sschemas: %d schemas in %s\n", n, *out)
}

// run writes one schema per group-version-kind of the document at swagger into out; it returns
// how many it wrote, or the first error reading, decoding or writing.
func run(swagger, out string) (int, error) {
	raw, err := os.ReadFile(swagger) // #nosec G304 -- the path is the operator's argument
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, fmt.Errorf("%s: %w", swagger, err)
	}
	if len(doc.Definitions) == 0 {
		return 0, fmt.Errorf("%s: no definitions", swagger)
	}
	defs := map[string]any{}
	for name, def := range doc.Definitions {
		defs[name] = convert(name, def)
	}
	if err := os.MkdirAll(out, 0o750); err != nil {
		return 0, err
	}
	names := make([]string, 0, len(doc.Definitions))
	for name := range doc.Definitions {
		names = append(names, name)
	}
	sort.Strings(names)
	written := 0
	for _, name := range names {
		kinds, err := kindsOf(doc.Definitions[name])
		if err != nil {
			return written, fmt.Errorf("%s: %w", name, err)
		}
		for _, k := range kinds {
			schema, err := standalone(name, k, defs)
			if err != nil {
				return written, err
			}
			b, err := json.Marshal(schema)
			if err != nil {
				return written, err
			}
			if err := os.WriteFile(filepath.Join(out, fileName(k)), b, 0o600); err != nil {
				return written, err
			}
			written++
		}
	}
	return written, nil
}

// kindsOf returns the group-version-kinds a definition is the schema of (none for the parts of
// other objects); it returns an error if the extension is not the list of objects it should be.
func kindsOf(def map[string]any) ([]gvk, error) {
	ext, ok := def["x-kubernetes-group-version-kind"]
	if !ok {
		return nil, nil
	}
	b, err := json.Marshal(ext)
	if err != nil {
		return nil, err
	}
	var out []gvk
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("x-kubernetes-group-version-kind: %w", err)
	}
	return out, nil
}

// fileName is kubeconform's {{.ResourceKind}}{{.KindSuffix}}.json for k: the lower-case kind,
// the group's first label (none for the core group) and the version.
func fileName(k gvk) string {
	s := strings.ToLower(k.Kind)
	if k.Group != "" {
		s += "-" + strings.ToLower(strings.Split(k.Group, ".")[0])
	}
	return s + "-" + strings.ToLower(k.Version) + ".json"
}

func apiVersion(k gvk) string {
	if k.Group == "" {
		return k.Version
	}
	return k.Group + "/" + k.Version
}

// standalone returns the schema of kind k (definition name) with every definition it reaches
// under "definitions"; it returns an error if a $ref names a definition the document lacks.
func standalone(name string, k gvk, defs map[string]any) (map[string]any, error) {
	reach := map[string]any{}
	queue := []string{name}
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		if _, seen := reach[n]; seen {
			continue
		}
		d, ok := defs[n]
		if !ok {
			return nil, fmt.Errorf("$ref %q: no such definition", n)
		}
		reach[n] = d
		queue = append(queue, refs(d, nil)...)
	}
	root := copyMap(defs[name].(map[string]any))
	props := copyMap(root["properties"].(map[string]any))
	props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion(k)}}
	props["kind"] = map[string]any{"type": "string", "enum": []any{k.Kind}}
	root["properties"] = props
	root["required"] = union(root["required"], "apiVersion", "kind")
	root["$schema"] = "http://json-schema.org/draft-04/schema#"
	root["definitions"] = reach
	return root, nil
}

// convert returns def as a JSON schema: IntOrString and Quantity as the unions YAML allows,
// every object with properties closed (strict), the OpenAPI extensions and descriptions dropped.
func convert(name string, def map[string]any) any {
	switch name {
	case intOrString:
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	case quantity:
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	return walk(def)
}

func walk(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			switch {
			case k == "description" || strings.HasPrefix(k, "x-"):
				continue
			case k == "properties":
				// Property names are data, not keywords: keep them all.
				ps := map[string]any{}
				for pn, pv := range e.(map[string]any) {
					ps[pn] = walk(pv)
				}
				out[k] = ps
			case k == "format" && e == "int-or-string":
				continue
			default:
				out[k] = walk(e)
			}
		}
		if x["x-kubernetes-int-or-string"] == true {
			return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		}
		if _, has := x["properties"]; has && x["additionalProperties"] == nil && x["x-kubernetes-preserve-unknown-fields"] != true {
			out["additionalProperties"] = false
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = walk(e)
		}
		return out
	}
	return v
}

// refs appends to acc the definition names v refers to.
func refs(v any, acc []string) []string {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && k == "$ref" {
				acc = append(acc, strings.TrimPrefix(s, refPrefix))
				continue
			}
			acc = refs(e, acc)
		}
	case []any:
		for _, e := range x {
			acc = refs(e, acc)
		}
	}
	return acc
}

func copyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func union(req any, add ...string) []any {
	var out []any
	seen := map[string]bool{}
	if list, ok := req.([]any); ok {
		for _, r := range list {
			if s, ok := r.(string); ok && !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	for _, s := range add {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
