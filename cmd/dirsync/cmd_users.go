package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
)

// usersAction is one `dirsync users` subcommand: how it turns its
// arguments into a call of the console API, and how it prints the answer.
type usersAction struct {
	name, args, summary string
	call                func(emails []string, f usersFlags) (usersCall, error)
	// print shows a 200 answer as text. Nil for the actions that change
	// something: they answer a console.Result, printed even when the call
	// failed, and exit 1 when an item was rejected.
	print func(w io.Writer, raw []byte) error
}

// usersCall is a request under /v1/accounts/{id}.
type usersCall struct {
	method, path string
	query        url.Values
	body         any
}

// usersFlags are the flags the actions read.
type usersFlags struct {
	permission, state, after string
	limit                    int
}

func usersActions() []usersAction {
	return []usersAction{
		{"invite", "EMAIL... --permission pro|basic", "invite to a team (addresses may be ';'-separated)", func(emails []string, f usersFlags) (usersCall, error) {
			return usersCall{method: http.MethodPost, path: "/invitations", body: map[string]any{"emails": emails, "permission": f.permission}}, many("invite", emails)
		}, nil},
		{"accept", "EMAIL", "accept a pending team invitation", func(emails []string, _ usersFlags) (usersCall, error) {
			return usersCall{method: http.MethodPost, path: "/invitations/" + first(emails) + "/accept"}, one("accept", emails)
		}, nil},
		{"register", "EMAIL", "join an enterprise account (email in a claimed domain)", func(emails []string, _ usersFlags) (usersCall, error) {
			return usersCall{method: http.MethodPost, path: "/registrations", body: map[string]string{"email": firstRaw(emails)}}, one("register", emails)
		}, nil},
		{"assign", "EMAIL... --permission pro|basic", "assign a permission", func(emails []string, f usersFlags) (usersCall, error) {
			if len(emails) == 1 {
				return usersCall{method: http.MethodPut, path: "/users/" + first(emails) + "/permission", body: map[string]string{"permission": f.permission}}, nil
			}
			return usersCall{method: http.MethodPost, path: "/bulk/permission", body: map[string]any{"emails": emails, "permission": f.permission}}, many("assign", emails)
		}, nil},
		{"remove", "EMAIL...", "remove from a team (or revoke a pending invitation)", perUserOrBulk("remove", http.MethodDelete, ""), nil},
		{"suspend", "EMAIL...", "suspend in an enterprise account", perUserOrBulk("suspend", http.MethodPost, "/suspend"), nil},
		{"unsuspend", "EMAIL...", "unsuspend in an enterprise account", perUserOrBulk("unsuspend", http.MethodPost, "/unsuspend"), nil},
		{"list", "[--state member|invited]", "the member list, page by page", func(_ []string, f usersFlags) (usersCall, error) {
			q := url.Values{}
			for k, v := range map[string]string{"state": f.state, "after": f.after} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if f.limit != 0 {
				q.Set("limit", fmt.Sprint(f.limit))
			}
			return usersCall{method: http.MethodGet, path: "/users", query: q}, nil
		}, printMembers},
		{"audit", "[--limit N]", "who changed what, newest first", func(_ []string, f usersFlags) (usersCall, error) {
			q := url.Values{}
			if f.limit != 0 {
				q.Set("limit", fmt.Sprint(f.limit))
			}
			return usersCall{method: http.MethodGet, path: "/audit", query: q}, nil
		}, printAudit},
	}
}

// perUserOrBulk is an action on one user's route, or on the bulk route for
// several.
func perUserOrBulk(name, method, suffix string) func([]string, usersFlags) (usersCall, error) {
	return func(emails []string, _ usersFlags) (usersCall, error) {
		if len(emails) == 1 {
			return usersCall{method: method, path: "/users/" + first(emails) + suffix}, nil
		}
		return usersCall{method: http.MethodPost, path: "/bulk/" + name, body: map[string]any{"emails": emails}}, many(name, emails)
	}
}

func one(action string, emails []string) error {
	if len(emails) != 1 {
		return usagef("%s takes exactly one EMAIL", action)
	}
	return nil
}

func many(action string, emails []string) error {
	if len(emails) == 0 {
		return usagef("%s needs at least one EMAIL", action)
	}
	return nil
}

// first is the first email, escaped for a path ("" when there is none).
func first(emails []string) string { return url.PathEscape(firstRaw(emails)) }

func firstRaw(emails []string) string {
	if len(emails) == 0 {
		return ""
	}
	return emails[0]
}

func usersUsage(actions []usersAction) string {
	names := make([]string, len(actions))
	var b strings.Builder
	for i, a := range actions {
		names[i] = a.name
		fmt.Fprintf(&b, "  %-40s %s\n", a.name+" "+a.args, a.summary)
	}
	return "<" + strings.Join(names, "|") + "> --account ID [flags] [EMAIL...]\n\n" + b.String() + `
The commands call the running daemon's admin API (--server, default the
config's api.listen, with its admin token: the config's, else
$DIRSYNC_ADMIN_TOKEN, else a loopback daemon's per-start token). Exit code 1
when anything was rejected.`
}

func cmdUsers(ctx context.Context, e env, args []string) error {
	actions := usersActions()
	usage := usersUsage(actions)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(e.stderr, "usage: dirsync users %s\n", usage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usagef("name a users command: %s", actionNames(actions))
	}
	i := slices.IndexFunc(actions, func(a usersAction) bool { return a.name == args[0] })
	if i < 0 {
		return usagef("unknown users command %q: use %s", args[0], actionNames(actions))
	}
	act := actions[i]
	fs := newFlags(e, "users "+act.name, usage)
	cfgPath := configFlag(fs, e)
	server := fs.String("server", "", "daemon URL (default http://<api.listen> from the config)")
	account := fs.String("account", "", "account id (required)")
	var f usersFlags
	fs.StringVar(&f.permission, "permission", "", "pro or basic (invite, assign)")
	actor := fs.String("actor", firstNonEmpty(e.getenv("DIRSYNC_ACTOR"), e.getenv("USER")), "who acts, for the audit trail (default $DIRSYNC_ACTOR or $USER)")
	output := fs.String("output", "text", "text or json")
	fs.StringVar(&f.state, "state", "", "list: member or invited (default both)")
	fs.IntVar(&f.limit, "limit", 0, "list, audit: page size (1..1000)")
	fs.StringVar(&f.after, "after", "", "list: start after this email (the previous page's next)")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if *account == "" {
		return usagef("--account is required")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output must be text or json")
	}
	var emails []string
	for _, p := range pos {
		emails = append(emails, console.SplitEmails(p)...)
	}
	call, err := act.call(emails, f)
	if err != nil {
		return err
	}
	api, err := usersServer(*server, *cfgPath, e)
	if err != nil {
		return err
	}
	u := api.base + "/v1/accounts/" + url.PathEscape(*account) + call.path
	if len(call.query) > 0 || call.method == http.MethodGet {
		u += "?" + call.query.Encode()
	}
	raw, err := apiClient{token: api.token, actor: *actor}.do(ctx, call.method, u, call.body)
	if act.print != nil { // a query: print only an answer
		switch {
		case err != nil:
			return err
		case *output == "json":
			_, err := e.stdout.Write(raw)
			return err
		}
		return act.print(e.stdout, raw)
	}
	if raw == nil {
		return err
	}
	var res console.Result
	_ = json.Unmarshal(raw, &res) // do checked it is JSON
	if *output == "json" {
		if _, werr := e.stdout.Write(raw); werr != nil {
			return werr
		}
	} else {
		printResult(e.stdout, res)
	}
	if err != nil {
		return err
	}
	if res.Rejected > 0 {
		return fmt.Errorf("%d of %d rejected (nothing changed for them)", res.Rejected, len(res.Items))
	}
	return nil
}

func actionNames(actions []usersAction) string {
	names := make([]string, len(actions))
	for i, a := range actions {
		names[i] = a.name
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// usersServer finds the daemon and its admin token: --server (with
// $DIRSYNC_ADMIN_TOKEN or a loopback daemon's per-start token), or the
// config's api.listen and admin token.
func usersServer(server, cfgPath string, e env) (daemonAPI, error) {
	if server != "" && cfgPath == "" {
		return daemonFor(server, nil, e)
	}
	cfg, err := loadConfig(cfgPath, e)
	if err != nil {
		return daemonAPI{}, err
	}
	return daemonFor(server, cfg, e)
}

// apiClient calls the console admin API with a JSON body.
type apiClient struct {
	token, actor string
}

// do sends the request. It returns the raw JSON answer whenever one came,
// and an error for any status but 2xx (the answer's "error" message when
// it has one).
func (c apiClient) do(ctx context.Context, method, u string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.actor != "" {
		req.Header.Set(consoleapi.ActorHeader, c.actor)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no dirsync daemon answers at %s (start it with `dirsync run`): %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	var msg struct {
		Error string `json:"error"`
	}
	if jerr := json.Unmarshal(raw, &msg); jerr != nil {
		return nil, fmt.Errorf("daemon answered HTTP %d with %q", resp.StatusCode, truncate(string(raw), 200))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		if msg.Error == "" {
			msg.Error = http.StatusText(resp.StatusCode)
		}
		return raw, fmt.Errorf("HTTP %d: %s", resp.StatusCode, msg.Error)
	}
	return raw, nil
}

func printResult(w io.Writer, res console.Result) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, it := range res.Items {
		switch {
		case it.Result == console.ResultRejected:
			fmt.Fprintf(tw, "rejected\t%s\t%s\n", it.Email, it.Error)
		case it.Decision != nil:
			fmt.Fprintf(tw, "%s\t%s\tnow: allowed=%t permission=%s reason=%s\n", it.Result, it.Email, it.Decision.Allowed, it.Decision.Permission, it.Decision.Reason)
		default:
			fmt.Fprintf(tw, "%s\t%s\t\n", it.Result, it.Email)
		}
	}
	tw.Flush()
	if len(res.Items) > 0 {
		fmt.Fprintf(w, "account %s: %d applied, %d unchanged, %d rejected\n", res.Account, res.Applied, res.Unchanged, res.Rejected)
	}
}

func printMembers(w io.Writer, raw []byte) error {
	var p console.Page
	if err := json.Unmarshal(raw, &p); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tSTATE\tPERMISSION\tSUSPENDED\tJOINED\tTRIAL ENDED")
	for _, m := range p.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\n", m.Email, m.State, m.Permission, m.Suspended, fmtTime(m.JoinedAt), fmtTime(m.TrialEndedAt))
	}
	tw.Flush()
	if p.Next != "" {
		fmt.Fprintf(w, "more: --after %s\n", p.Next)
	}
	return nil
}

func printAudit(w io.Writer, raw []byte) error {
	var out struct {
		Entries []console.AuditEntry `json:"entries"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, en := range out.Entries {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", en.At.UTC().Format(time.RFC3339), en.Actor, en.Action, en.Email, en.Detail)
	}
	return tw.Flush()
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
