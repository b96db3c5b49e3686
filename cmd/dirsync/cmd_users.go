package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/console"
	"github.com/dirsync/dirsync/internal/sync/consoleapi"
)

const usersUsage = `<invite|accept|register|assign|remove|suspend|unsuspend|list|audit> --account ID [flags] [EMAIL...]

  invite EMAIL... --permission pro|basic   invite to a team (addresses may be ';'-separated)
  accept EMAIL                             accept a pending team invitation
  register EMAIL                           join an enterprise account (email in a claimed domain)
  assign EMAIL... --permission pro|basic   assign a permission
  remove EMAIL...                          remove from a team (or revoke a pending invitation)
  suspend EMAIL... | unsuspend EMAIL...    suspend or unsuspend in an enterprise account
  list [--state member|invited]            the member list, page by page
  audit [--limit N]                        who changed what, newest first

The commands call the running daemon's admin API (--server, default the
config's api.listen, with its admin token: the config's, else
$DIRSYNC_ADMIN_TOKEN, else a loopback daemon's per-start token). Exit code 1
when anything was rejected.`

func cmdUsers(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintf(e.stderr, "usage: dirsync users %s\n", usersUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return nil
		}
		return usagef("name a users command: invite, accept, register, assign, remove, suspend, unsuspend, list or audit")
	}
	sub, args := args[0], args[1:]
	fs := newFlags(e, "users "+sub, usersUsage)
	cfgPath := configFlag(fs, e)
	server := fs.String("server", "", "daemon URL (default http://<api.listen> from the config)")
	account := fs.String("account", "", "account id (required)")
	permission := fs.String("permission", "", "pro or basic (invite, assign)")
	actor := fs.String("actor", firstNonEmpty(e.getenv("DIRSYNC_ACTOR"), e.getenv("USER")), "who acts, for the audit trail (default $DIRSYNC_ACTOR or $USER)")
	output := fs.String("output", "text", "text or json")
	state := fs.String("state", "", "list: member or invited (default both)")
	limit := fs.Int("limit", 0, "list, audit: page size (1..1000)")
	after := fs.String("after", "", "list: start after this email (the previous page's next)")
	pos, err := parse(fs, args)
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
	api, err := usersServer(*server, *cfgPath, e)
	if err != nil {
		return err
	}
	acct := api.base + "/v1/accounts/" + url.PathEscape(*account)
	c := apiClient{token: api.token, actor: *actor}

	var method, u string
	var body any
	one := func() (string, error) {
		if len(emails) != 1 {
			return "", usagef("%s takes exactly one EMAIL", sub)
		}
		return url.PathEscape(emails[0]), nil
	}
	many := func() error {
		if len(emails) == 0 {
			return usagef("%s needs at least one EMAIL", sub)
		}
		return nil
	}
	switch sub {
	case "invite":
		if err := many(); err != nil {
			return err
		}
		method, u, body = http.MethodPost, acct+"/invitations", map[string]any{"emails": emails, "permission": *permission}
	case "accept":
		email, err := one()
		if err != nil {
			return err
		}
		method, u = http.MethodPost, acct+"/invitations/"+email+"/accept"
	case "register":
		if _, err := one(); err != nil {
			return err
		}
		method, u, body = http.MethodPost, acct+"/registrations", map[string]string{"email": emails[0]}
	case "assign":
		if err := many(); err != nil {
			return err
		}
		if len(emails) == 1 {
			method, u, body = http.MethodPut, acct+"/users/"+url.PathEscape(emails[0])+"/permission", map[string]string{"permission": *permission}
		} else {
			method, u, body = http.MethodPost, acct+"/bulk/permission", map[string]any{"emails": emails, "permission": *permission}
		}
	case "remove", "suspend", "unsuspend":
		if err := many(); err != nil {
			return err
		}
		switch {
		case len(emails) > 1:
			method, u, body = http.MethodPost, acct+"/bulk/"+sub, map[string]any{"emails": emails}
		case sub == "remove":
			method, u = http.MethodDelete, acct+"/users/"+url.PathEscape(emails[0])
		default:
			method, u = http.MethodPost, acct+"/users/"+url.PathEscape(emails[0])+"/"+sub
		}
	case "list":
		q := url.Values{}
		for k, v := range map[string]string{"state": *state, "after": *after} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if *limit != 0 {
			q.Set("limit", fmt.Sprint(*limit))
		}
		var page console.Page
		raw, err := c.do(ctx, http.MethodGet, acct+"/users?"+q.Encode(), nil, &page)
		if err != nil {
			return err
		}
		if *output == "json" {
			_, err := e.stdout.Write(raw)
			return err
		}
		printMembers(e.stdout, page)
		return nil
	case "audit":
		q := url.Values{}
		if *limit != 0 {
			q.Set("limit", fmt.Sprint(*limit))
		}
		var out struct {
			Entries []console.AuditEntry `json:"entries"`
		}
		raw, err := c.do(ctx, http.MethodGet, acct+"/audit?"+q.Encode(), nil, &out)
		if err != nil {
			return err
		}
		if *output == "json" {
			_, err := e.stdout.Write(raw)
			return err
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
		for _, en := range out.Entries {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", en.At.UTC().Format(time.RFC3339), en.Actor, en.Action, en.Email, en.Detail)
		}
		return tw.Flush()
	default:
		return usagef("unknown users command %q: use invite, accept, register, assign, remove, suspend, unsuspend, list or audit", sub)
	}

	var res console.Result
	raw, err := c.do(ctx, method, u, body, &res)
	if raw == nil {
		return err
	}
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

// do sends the request and decodes the answer into out. It returns the raw
// answer whenever one came, and an error for any status but 200 (the
// answer's "error" message when it has one).
func (c apiClient) do(ctx context.Context, method, u string, body, out any) ([]byte, error) {
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
	if out != nil {
		_ = json.Unmarshal(raw, out) // same document, already known to be JSON
	}
	if resp.StatusCode != http.StatusOK {
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

func printMembers(w io.Writer, p console.Page) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tSTATE\tPERMISSION\tSUSPENDED\tJOINED\tTRIAL ENDED")
	for _, m := range p.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%t\t%s\t%s\n", m.Email, m.State, m.Permission, m.Suspended, fmtTime(m.JoinedAt), fmtTime(m.TrialEndedAt))
	}
	tw.Flush()
	if p.Next != "" {
		fmt.Fprintf(w, "more: --after %s\n", p.Next)
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
