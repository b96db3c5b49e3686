package scim

import "strings"

// The discovery answers (RFC 7644 §4) are built from the same schema
// definitions that check requests, so /Schemas says exactly what is
// accepted.

// ServiceProviderConfig is the answer of /ServiceProviderConfig (RFC 7643
// §5) for an account whose SCIM base URL is base.
func ServiceProviderConfig(base string) map[string]any {
	return map[string]any{
		"schemas":          []string{URNServiceProviderCfg},
		"documentationUri": "https://github.com/dirsync/dirsync/blob/main/docs/scim.md",
		"patch":            map[string]any{"supported": true},
		"bulk":             map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":           map[string]any{"supported": true, "maxResults": MaxCount},
		"changePassword":   map[string]any{"supported": false},
		"sort":             map[string]any{"supported": false},
		"etag":             map[string]any{"supported": true},
		"authenticationSchemes": []any{map[string]any{
			"type": "oauthbearertoken", "name": "Bearer token", "primary": true,
			"description": "the account's SCIM token: Authorization: Bearer <token>",
		}},
		"meta": map[string]any{"resourceType": "ServiceProviderConfig", "location": base + "/ServiceProviderConfig"},
	}
}

// ResourceTypes is the answer of /ResourceTypes (RFC 7643 §6), one entry
// per resource type.
func ResourceTypes(base string) []map[string]any {
	var out []map[string]any
	for _, rt := range []*resourceType{userType, groupType} {
		out = append(out, resourceTypeJSON(rt, base))
	}
	return out
}

// ResourceType returns one entry of /ResourceTypes by name (User or
// Group, case-insensitively), or nil.
func ResourceType(base, name string) map[string]any {
	for _, rt := range []*resourceType{userType, groupType} {
		if strings.EqualFold(rt.Name, name) {
			return resourceTypeJSON(rt, base)
		}
	}
	return nil
}

func resourceTypeJSON(rt *resourceType, base string) map[string]any {
	exts := []any{}
	for _, e := range rt.Extensions {
		exts = append(exts, map[string]any{"schema": e.ID, "required": false})
	}
	return map[string]any{
		"schemas": []string{URNResourceType}, "id": rt.Name, "name": rt.Name, "endpoint": rt.Endpoint,
		"description": rt.Desc, "schema": rt.Core.ID, "schemaExtensions": exts,
		"meta": map[string]any{"resourceType": "ResourceType", "location": base + "/ResourceTypes/" + rt.Name},
	}
}

// Schemas is the answer of /Schemas (RFC 7643 §7).
func Schemas(base string) []map[string]any {
	var out []map[string]any
	for _, s := range []*schema{userSchema, enterpriseUserSchema, groupSchema} {
		out = append(out, schemaJSON(s, base))
	}
	return out
}

// Schema returns one schema by URN, or nil.
func Schema(base, urn string) map[string]any {
	for _, s := range []*schema{userSchema, enterpriseUserSchema, groupSchema} {
		if strings.EqualFold(s.ID, urn) {
			return schemaJSON(s, base)
		}
	}
	return nil
}

func schemaJSON(s *schema, base string) map[string]any {
	return map[string]any{
		"schemas": []string{URNSchema}, "id": s.ID, "name": s.Name, "description": s.Desc,
		"attributes": attributesJSON(s.Attrs),
		"meta":       map[string]any{"resourceType": "Schema", "location": base + "/Schemas/" + s.ID},
	}
}

func attributesJSON(attrs []*attribute) []any {
	out := make([]any, 0, len(attrs))
	for _, a := range attrs {
		m := map[string]any{
			"name": a.Name, "type": string(a.Type), "multiValued": a.Multi, "description": a.Desc,
			"required": a.Required, "caseExact": a.CaseExact, "mutability": a.mutability(),
			"returned": a.returned(), "uniqueness": "none",
		}
		if a.Uniqueness != "" {
			m["uniqueness"] = a.Uniqueness
		}
		if len(a.Canonical) > 0 {
			m["canonicalValues"] = a.Canonical
		}
		if len(a.RefTypes) > 0 {
			m["referenceTypes"] = a.RefTypes
		}
		if len(a.Sub) > 0 {
			m["subAttributes"] = attributesJSON(a.Sub)
		}
		out = append(out, m)
	}
	return out
}
