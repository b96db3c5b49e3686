package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/sync/httpapi"
)

func cmdCheck(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "check", "--config FILE EMAIL [--explain] [--output text|json] [--server URL]")
	cfgPath := configFlag(fs, e)
	explain := fs.Bool("explain", false, "add the group paths, directory state and account freshness")
	output := fs.String("output", "text", "text or json")
	server := fs.String("server", "", "ask the daemon at this URL instead of reading the cache directly")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one EMAIL argument")
	}
	if *output != "text" && *output != "json" {
		return usagef("--output must be text or json")
	}
	email := pos[0]

	var cfg *config.Config
	if *server == "" {
		if cfg, err = loadConfig(*cfgPath, e); err != nil {
			return err
		}
	}
	var out httpapi.Explanation
	if cfg != nil && cfg.Cache.Backend != config.BackendMemory {
		out, err = localCheck(ctx, cfg, e, email, *explain)
	} else {
		api, aerr := daemonFor(*server, cfg, e)
		if aerr != nil {
			return aerr
		}
		if cfg != nil {
			if api.token == "" && !*explain { // the read token opens /v1/access
				if api.token, err = config.ReadSecret(cfg.API.ReadTokenFile, cfg.API.ReadTokenEnv, e.getenv); err != nil {
					return err
				}
			}
			fmt.Fprintf(e.stderr, "(memory cache: asking the daemon at %s)\n", cfg.API.Listen)
		}
		out, err = remoteCheck(ctx, api, email, *explain)
	}
	if err != nil {
		return fmt.Errorf("%w (callers must deny sign-in on this error)", err)
	}
	if !*explain {
		out.Detail = nil
		out.AccountStatus = nil
	}
	if *output == "json" {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if *explain {
			return enc.Encode(out)
		}
		return enc.Encode(out.Decision)
	}
	printDecision(e, out)
	return nil
}

func localCheck(ctx context.Context, cfg *config.Config, e env, email string, explain bool) (httpapi.Explanation, error) {
	client, err := newRedisClient(cfg.Cache.Redis, e)
	if err != nil {
		return httpapi.Explanation{}, err
	}
	defer client.Close()
	r := accesscache.NewReader(client, cfg.Cache.Redis.KeyPrefix)
	d, err := r.Check(ctx, email)
	if err != nil {
		return httpapi.Explanation{}, err
	}
	out := httpapi.Explanation{Decision: d}
	if explain && d.Account != "" {
		st, ok, err := r.AccountStatus(ctx, d.Account)
		if err != nil {
			return out, err
		}
		if ok {
			out.AccountStatus = &st
		}
	}
	return out, nil
}

func remoteCheck(ctx context.Context, api daemonAPI, email string, explain bool) (httpapi.Explanation, error) {
	u := api.base + "/v1/access/" + url.PathEscape(email)
	if explain {
		u += "/explain"
	}
	var out struct {
		httpapi.Explanation
		Error string `json:"error"`
	}
	code, err := callAPI(ctx, http.MethodGet, u, api.token, &out)
	if err != nil {
		return httpapi.Explanation{}, err
	}
	if code != http.StatusOK {
		return httpapi.Explanation{}, fmt.Errorf("daemon answered HTTP %d: %s", code, out.Error)
	}
	return out.Explanation, nil
}

func printDecision(e env, x httpapi.Explanation) {
	d := x.Decision
	verdict := "DENIED"
	if d.Allowed {
		verdict = "ALLOWED"
	}
	fmt.Fprintf(e.stdout, "%s: %s  permission=%s  reason=%s\n", d.Email, verdict, d.Permission, d.Reason)
	if d.Account != "" {
		fmt.Fprintf(e.stdout, "  account:      %s\n", d.Account)
		fmt.Fprintf(e.stdout, "  user id:      %s\n", d.UserID)
		fmt.Fprintf(e.stdout, "  capabilities: %s\n", capabilityList(d.Capabilities))
		if len(d.Via) > 0 {
			fmt.Fprintf(e.stdout, "  via:          %s\n", strings.Join(d.Via, "; "))
		}
		fmt.Fprintf(e.stdout, "  synced at:    %s\n", d.SyncedAt.Format("2006-01-02T15:04:05Z07:00"))
	}
	if det := d.Detail; det != nil {
		fmt.Fprintf(e.stdout, "  rule:         %s\n", det.Rule)
		fmt.Fprintf(e.stdout, "  directory:    status=%s", det.DirectoryStatus)
		if det.ExpiresAt != nil {
			fmt.Fprintf(e.stdout, " expires=%s", det.ExpiresAt.Format("2006-01-02T15:04:05Z07:00"))
		}
		if det.InAccessGroup != nil {
			fmt.Fprintf(e.stdout, " in_access_group=%t", *det.InAccessGroup)
		}
		fmt.Fprintln(e.stdout)
		if det.DN != "" {
			fmt.Fprintf(e.stdout, "  dn:           %s\n", det.DN)
		}
		for _, p := range det.Paths {
			fmt.Fprintf(e.stdout, "  path (%s):  %s → user\n", p.Permission, strings.Join(p.Groups, " → "))
		}
	}
	if st := x.AccountStatus; st != nil {
		fmt.Fprintf(e.stdout, "  account sync: last %s, last full %s, generation %d\n",
			st.LastSyncAt.Format("2006-01-02T15:04:05Z07:00"), st.LastFullSyncAt.Format("2006-01-02T15:04:05Z07:00"), st.Generation)
		if st.Hold != nil {
			fmt.Fprintf(e.stdout, "  HOLD pending: %s\n", st.Hold.Reason)
		}
	}
}

func capabilityList(c entitlement.Capabilities) string {
	var parts []string
	if c.HostMeetings {
		parts = append(parts, "host_meetings")
	}
	if c.AttendMeetings {
		parts = append(parts, "attend_meetings")
	}
	if c.Chat {
		parts = append(parts, "chat")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
