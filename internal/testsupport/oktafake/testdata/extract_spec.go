//go:build ignore

// extract_spec copies the operations the fake Okta serves, and every
// component they reference, out of Okta's published management API spec, so
// the tests can validate the fake's responses without the 3.4 MB original.
//
//	go run testdata/extract_spec.go /path/to/management-minimal.yaml > testdata/okta-management-subset.yaml
//
// Source: okta/okta-management-openapi-spec, dist/current/management-minimal.yaml
// at commit fdda229e82940cf5af4611ad673ca6a27974e31b (Apache-2.0).
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// operations the fake implements: path → methods.
var operations = map[string][]string{
	"/api/v1/users":                  {"get"},
	"/api/v1/users/{id}":             {"get"},
	"/api/v1/groups":                 {"get"},
	"/api/v1/groups/{groupId}":       {"get"},
	"/api/v1/groups/{groupId}/users": {"get"},
	"/api/v1/logs":                   {"get"},
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run extract_spec.go management-minimal.yaml")
		os.Exit(2)
	}
	raw, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root := doc.Content[0]
	paths := get(root, "paths")
	components := get(root, "components")

	outPaths := &yaml.Node{Kind: yaml.MappingNode}
	var keys []string
	for k := range operations {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	refs := map[string]bool{}
	for _, p := range keys {
		item := get(paths, p)
		if item == nil {
			fmt.Fprintf(os.Stderr, "path %s not in spec\n", p)
			os.Exit(1)
		}
		outItem := &yaml.Node{Kind: yaml.MappingNode}
		for _, m := range operations[p] {
			op := get(item, m)
			outItem.Content = append(outItem.Content, scalar(m), op)
			collectRefs(op, refs)
		}
		if params := get(item, "parameters"); params != nil {
			outItem.Content = append(outItem.Content, scalar("parameters"), params)
			collectRefs(params, refs)
		}
		outPaths.Content = append(outPaths.Content, scalar(p), outItem)
	}
	// Close over references between components.
	for changed := true; changed; {
		changed = false
		for r := range refs {
			n := resolve(components, r)
			if n == nil {
				fmt.Fprintf(os.Stderr, "unresolved ref %s\n", r)
				os.Exit(1)
			}
			before := len(refs)
			collectRefs(n, refs)
			if len(refs) != before {
				changed = true
			}
		}
	}
	outComponents := &yaml.Node{Kind: yaml.MappingNode}
	bySection := map[string][]string{}
	for r := range refs {
		parts := strings.Split(strings.TrimPrefix(r, "#/components/"), "/")
		bySection[parts[0]] = append(bySection[parts[0]], parts[1])
	}
	var sections []string
	for s := range bySection {
		sections = append(sections, s)
	}
	sort.Strings(sections)
	for _, s := range sections {
		names := bySection[s]
		sort.Strings(names)
		sec := &yaml.Node{Kind: yaml.MappingNode}
		for _, n := range names {
			sec.Content = append(sec.Content, scalar(n), get(get(components, s), n))
		}
		outComponents.Content = append(outComponents.Content, scalar(s), sec)
	}
	if ss := get(components, "securitySchemes"); ss != nil {
		outComponents.Content = append(outComponents.Content, scalar("securitySchemes"), ss)
	}

	out := &yaml.Node{Kind: yaml.MappingNode}
	for _, k := range []string{"openapi", "info", "servers", "security"} {
		if v := get(root, k); v != nil {
			out.Content = append(out.Content, scalar(k), v)
		}
	}
	out.Content = append(out.Content, scalar("paths"), outPaths, scalar("components"), outComponents)

	fmt.Println("# Subset of Okta's Management API OpenAPI spec: the operations the fake")
	fmt.Println("# Okta serves and the components they reference, copied unchanged.")
	fmt.Println("# Source: https://github.com/okta/okta-management-openapi-spec")
	fmt.Println("#   dist/current/management-minimal.yaml, commit fdda229e82940cf5af4611ad673ca6a27974e31b")
	fmt.Println("# Copyright Okta, Inc. Licensed under the Apache License, Version 2.0")
	fmt.Println("#   (https://www.apache.org/licenses/LICENSE-2.0).")
	fmt.Println("# Regenerate with: go run testdata/extract_spec.go management-minimal.yaml")
	enc := yaml.NewEncoder(os.Stdout)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func resolve(components *yaml.Node, ref string) *yaml.Node {
	parts := strings.Split(strings.TrimPrefix(ref, "#/components/"), "/")
	if len(parts) != 2 {
		return nil
	}
	return get(get(components, parts[0]), parts[1])
}

func collectRefs(n *yaml.Node, refs map[string]bool) {
	if n == nil {
		return
	}
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "$ref" && strings.HasPrefix(n.Content[i+1].Value, "#/components/") {
				refs[n.Content[i+1].Value] = true
			}
		}
	}
	for _, c := range n.Content {
		collectRefs(c, refs)
	}
}
