package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// accountsAction is one `dirsync accounts` subcommand: a call of the
// accounts API and how its answer is shown as text.
type accountsAction struct {
	name, args, summary string
	call                func(f accountsFlags) (usersCall, error)
	print               func(w io.Writer, raw []byte) error
}

type accountsFlags struct {
	account, file, search, name, token string
	limit                              int
	dryRun                             bool
}

func (f accountsFlags) path(suffix string) string {
	return "/v1/accounts/" + url.PathEscape(f.account) + suffix
}

func needAccount(f accountsFlags) error {
	if f.account == "" {
		return usagef("--account is required")
	}
	return nil
}

func accountsActions() []accountsAction {
	return []accountsAction{
		{"list", "", "every account, from the file and the API", func(accountsFlags) (usersCall, error) {
			return usersCall{method: http.MethodGet, path: "/v1/accounts"}, nil
		}, printAccounts},
		{"show", "--account ID", "an account's document (secrets redacted)", func(f accountsFlags) (usersCall, error) {
			return usersCall{method: http.MethodGet, path: f.path("")}, needAccount(f)
		}, printJSON},
		{"apply", "-f FILE [--account ID]", "create or replace an account from one accounts[] entry (YAML or JSON)", func(f accountsFlags) (usersCall, error) {
			doc, err := readDocument(f.file)
			if err != nil {
				return usersCall{}, err
			}
			m, ok := doc.(map[string]any)
			if !ok {
				return usersCall{}, usagef("%s: an account is a mapping (one accounts[] entry)", f.file)
			}
			if f.account == "" {
				f.account, _ = m["id"].(string)
			}
			return usersCall{method: http.MethodPut, path: f.path(""), body: m}, needAccount(f)
		}, printJSON},
		{"delete", "--account ID", "delete an account created through the API (its users become unknown_user)", func(f accountsFlags) (usersCall, error) {
			return usersCall{method: http.MethodDelete, path: f.path("")}, needAccount(f)
		}, printJSON},
		{"groups", "--account ID [--search TEXT] [--limit N]", "the groups of the account's last directory read", func(f accountsFlags) (usersCall, error) {
			q := url.Values{}
			if f.search != "" {
				q.Set("search", f.search)
			}
			if f.limit != 0 {
				q.Set("limit", fmt.Sprint(f.limit))
			}
			return usersCall{method: http.MethodGet, path: f.path("/groups"), query: q}, needAccount(f)
		}, printGroups},
		{"bindings", "--account ID -f FILE [--dry-run]", "replace the bindings ([{group, permission}], YAML or JSON); --dry-run shows the diff", func(f accountsFlags) (usersCall, error) {
			doc, err := readDocument(f.file)
			if err != nil {
				return usersCall{}, err
			}
			q := url.Values{}
			if f.dryRun {
				q.Set("dry_run", "true")
			}
			return usersCall{method: http.MethodPut, path: f.path("/bindings"), query: q, body: doc}, needAccount(f)
		}, printJSON},
		{"tokens", "--account ID", "the account's tenant tokens", func(f accountsFlags) (usersCall, error) {
			return usersCall{method: http.MethodGet, path: f.path("/tokens")}, needAccount(f)
		}, printJSON},
		{"issue-token", "--account ID [--name NAME]", "issue a tenant token (shown once)", func(f accountsFlags) (usersCall, error) {
			return usersCall{method: http.MethodPost, path: f.path("/tokens"), body: map[string]string{"name": f.name}}, needAccount(f)
		}, printJSON},
		{"revoke-token", "--account ID --token TOKEN_ID", "revoke a tenant token", func(f accountsFlags) (usersCall, error) {
			if f.token == "" {
				return usersCall{}, usagef("--token (the token's id, tok_…) is required")
			}
			return usersCall{method: http.MethodDelete, path: f.path("/tokens/" + url.PathEscape(f.token))}, needAccount(f)
		}, printJSON},
	}
}

// readDocument reads a YAML or JSON document from path ("-": stdin).
func readDocument(path string) (any, error) {
	if path == "" {
		return nil, usagef("-f FILE is required")
	}
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, usagef("%s: not YAML or JSON: %v", path, err)
	}
	return doc, nil
}

func cmdAccounts(ctx context.Context, e env, args []string) error {
	actions := accountsActions()
	names := make([]string, len(actions))
	var help strings.Builder
	for i, a := range actions {
		names[i] = a.name
		fmt.Fprintf(&help, "  %-48s %s\n", a.name+" "+a.args, a.summary)
	}
	usage := "<" + strings.Join(names, "|") + "> [flags]\n\n" + help.String() +
		"\nThe commands call the running daemon's accounts API (--server, default the config's\napi.listen, with its admin token, else $DIRSYNC_ADMIN_TOKEN; a tenant token works too for\nits own account)."
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(e.stderr, "usage: dirsync accounts %s\n", usage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usagef("name an accounts command: %s", strings.Join(names, ", "))
	}
	i := slices.IndexFunc(actions, func(a accountsAction) bool { return a.name == args[0] })
	if i < 0 {
		return usagef("unknown accounts command %q: use %s", args[0], strings.Join(names, ", "))
	}
	act := actions[i]
	fs := newFlags(e, "accounts "+act.name, usage)
	cfgPath := configFlag(fs, e)
	server := fs.String("server", "", "daemon URL (default http://<api.listen> from the config)")
	output := fs.String("output", "text", "text or json")
	var f accountsFlags
	fs.StringVar(&f.account, "account", "", "account id")
	fs.StringVar(&f.file, "f", "", "apply, bindings: the document (YAML or JSON; - for stdin)")
	fs.StringVar(&f.search, "search", "", "groups: part of the group's name or reference")
	fs.IntVar(&f.limit, "limit", 0, "groups: at most this many (1..1000)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "bindings: show the diff, publish nothing")
	fs.StringVar(&f.name, "name", "", "issue-token: a name for the token")
	fs.StringVar(&f.token, "token", "", "revoke-token: the token's id (tok_…)")
	if _, err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("--output must be text or json")
	}
	call, err := act.call(f)
	if err != nil {
		return err
	}
	api, err := usersServer(*server, *cfgPath, e)
	if err != nil {
		return err
	}
	u := api.base + call.path
	if len(call.query) > 0 {
		u += "?" + call.query.Encode()
	}
	raw, err := apiClient{token: api.token}.do(ctx, call.method, u, call.body)
	if err != nil {
		if raw != nil && *output == "json" {
			_, _ = e.stdout.Write(raw)
		} else if raw != nil {
			printProblems(e.stderr, raw)
		}
		return err
	}
	if *output == "json" {
		_, err := e.stdout.Write(raw)
		return err
	}
	return act.print(e.stdout, raw)
}

func printJSON(w io.Writer, raw []byte) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// printProblems shows a 400's problems, one per line, with their paths.
func printProblems(w io.Writer, raw []byte) {
	var ans struct {
		Problems []struct{ Path, Message string }
	}
	if json.Unmarshal(raw, &ans) == nil {
		for _, p := range ans.Problems {
			fmt.Fprintf(w, "  %s: %s\n", p.Path, p.Message)
		}
	}
}

func printAccounts(w io.Writer, raw []byte) error {
	var ans struct {
		Accounts []struct {
			ID             string   `json:"id"`
			Origin         string   `json:"origin"`
			DirectoryType  string   `json:"directory_type"`
			ClaimedDomains []string `json:"claimed_domains"`
			Bindings       int      `json:"bindings"`
		} `json:"accounts"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tORIGIN\tDIRECTORY\tDOMAINS\tBINDINGS")
	for _, a := range ans.Accounts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", a.ID, a.Origin, a.DirectoryType, strings.Join(a.ClaimedDomains, ","), a.Bindings)
	}
	return tw.Flush()
}

func printGroups(w io.Writer, raw []byte) error {
	var ans struct {
		Total  int `json:"total"`
		Groups []struct {
			Ref        string `json:"ref"`
			Name       string `json:"name"`
			Direct     int    `json:"direct_members"`
			Transitive int    `json:"transitive_members"`
		} `json:"groups"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDIRECT\tTRANSITIVE\tBIND AS")
	for _, g := range ans.Groups {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", g.Name, g.Direct, g.Transitive, g.Ref)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if ans.Total > len(ans.Groups) {
		fmt.Fprintf(w, "(%d of %d groups: narrow with --search or raise --limit)\n", len(ans.Groups), ans.Total)
	}
	return nil
}
