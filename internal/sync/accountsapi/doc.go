package accountsapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/dirsync/dirsync/internal/config"
)

// sealedPrefix names the environment variables an account document is
// rewritten to read its sealed secrets from (see materialize). No real
// environment variable is ever read under it.
const sealedPrefix = "dirsync-sealed:"

// inlineSecrets returns, per section key, the secrets a document may give
// inline: for each <name>_file/<name>_env pair of the section's schema,
// <name> (e.g. ldap: bind_password; okta: token, event_hook_secret).
func inlineSecrets(kinds []config.SourceKind) map[string][]string {
	out := map[string][]string{}
	for _, k := range kinds {
		t := k.SectionType()
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		tags := map[string]bool{}
		for i := 0; i < t.NumField(); i++ {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			tags[tag] = true
		}
		for tag := range tags {
			if name, ok := strings.CutSuffix(tag, "_file"); ok && tags[name+"_env"] {
				out[k.Key()] = append(out[k.Key()], name)
			}
		}
		sort.Strings(out[k.Key()])
	}
	return out
}

// docError is a problem with a document's shape, before validation.
type docError struct{ msg string }

func (e *docError) Error() string { return e.msg }

// prepare checks a document sent to the API and splits it into the
// document to store (no secret values) and its inline secrets by field
// path ("directory.ldap.bind_password"). It refuses what would let API
// input reach the host: *_file and *_env fields anywhere (secrets come
// inline and are sealed), and an ldif path unless admin is true and the
// path is inside ldifRoot.
func prepare(raw []byte, id string, kinds []config.SourceKind, admin bool, ldifRoot string) (clean []byte, secrets map[string]string, err error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, &docError{"the body is not a JSON object: " + err.Error()}
	}
	if dec.More() {
		return nil, nil, &docError{"the body holds more than one JSON value"}
	}
	if v, ok := doc["id"]; ok && v != id {
		return nil, nil, &docError{fmt.Sprintf("id %v in the body is not the id %q of the URL", v, id)}
	}
	doc["id"] = id
	if path := fileReference(doc, ""); path != "" {
		return nil, nil, &docError{fmt.Sprintf("%s: accounts created through the API may not name files or environment variables on dirsync's host; give secrets inline (e.g. directory.ldap.bind_password), they are stored sealed", path)}
	}
	secrets = map[string]string{}
	dir, _ := doc["directory"].(map[string]any)
	for key, names := range inlineSecrets(kinds) {
		section, _ := dir[key].(map[string]any)
		for _, name := range names {
			v, ok := section[name]
			if !ok {
				continue
			}
			s, isString := v.(string)
			if !isString || strings.TrimSpace(s) == "" {
				return nil, nil, &docError{fmt.Sprintf("directory.%s.%s: must be a non-empty string", key, name)}
			}
			secrets["directory."+key+"."+name] = strings.TrimSpace(s)
			delete(section, name)
		}
	}
	if typ, _ := dir["type"].(string); typ == "ldif" {
		section, _ := dir["ldif"].(map[string]any)
		p, _ := section["path"].(string)
		switch {
		case !admin:
			return nil, nil, &docError{"directory.type ldif reads a file on dirsync's host: only the global administrator may create such an account"}
		case ldifRoot == "":
			return nil, nil, &docError{"directory.type ldif is not allowed through the API: set accounts_api.ldif_root to allow files inside one folder"}
		case p == "" || !filepath.IsAbs(p) || !inside(filepath.Clean(p), ldifRoot):
			return nil, nil, &docError{fmt.Sprintf("directory.ldif.path: %q must be an absolute path inside accounts_api.ldif_root (%s)", p, ldifRoot)}
		}
	}
	clean, err = json.Marshal(doc)
	return clean, secrets, err
}

// inside reports whether path is root or below it (both clean).
func inside(path, root string) bool {
	rel, err := filepath.Rel(filepath.Clean(root), path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}

// fileReference returns the path of the first *_file or *_env field in v,
// or "".
func fileReference(v any, path string) string {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if strings.HasSuffix(k, "_file") || strings.HasSuffix(k, "_env") || strings.HasSuffix(k, "_files") {
				return p
			}
			if got := fileReference(x[k], p); got != "" {
				return got
			}
		}
	case []any:
		for i, e := range x {
			if got := fileReference(e, fmt.Sprintf("%s[%d]", path, i)); got != "" {
				return got
			}
		}
	}
	return ""
}

// materialize returns the document the config schema validates: each
// sealed secret named by a <name>_env field that getenv resolves (and
// nothing else resolves).
func materialize(clean []byte, secrets map[string]string) ([]byte, func(string) string, error) {
	var doc map[string]any
	if err := json.Unmarshal(clean, &doc); err != nil {
		return nil, nil, err
	}
	dir, _ := doc["directory"].(map[string]any)
	for path := range secrets {
		parts := strings.Split(path, ".") // directory.<key>.<name>
		if len(parts) != 3 || dir == nil {
			continue
		}
		section, _ := dir[parts[1]].(map[string]any)
		if section == nil {
			section = map[string]any{}
			dir[parts[1]] = section
		}
		section[parts[2]+"_env"] = sealedPrefix + path
	}
	b, err := json.Marshal(doc)
	getenv := func(name string) string {
		if p, ok := strings.CutPrefix(name, sealedPrefix); ok {
			return secrets[p]
		}
		return ""
	}
	return b, getenv, err
}

// Decode turns a stored account into the account the daemon runs: its
// document with its secrets, validated against base (the file's config,
// with every other account, so ids and domains stay unique). getenv
// resolves the account's sealed secrets when its source is opened.
func Decode(base *config.Config, doc []byte, secrets map[string]string) (a *config.Account, getenv func(string) string, err error) {
	full, getenv, err := materialize(doc, secrets)
	if err != nil {
		return nil, nil, err
	}
	if a, err = base.ParseAccount(full, "", getenv); err != nil {
		return nil, nil, err
	}
	return a, getenv, nil
}

// Redacted is a stored document as the API shows it: no secret values,
// the fields that have one listed in secrets_set.
func redacted(doc []byte, secrets map[string]string) map[string]any {
	var out map[string]any
	_ = json.Unmarshal(doc, &out)
	set := make([]string, 0, len(secrets))
	for k := range secrets {
		set = append(set, k)
	}
	slices.Sort(set)
	return map[string]any{"account": out, "secrets_set": set}
}
