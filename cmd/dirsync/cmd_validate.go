package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/dirsync/dirsync/internal/config"
)

func cmdValidate(_ context.Context, e env, args []string) error {
	fs := newFlags(e, "validate", "--config FILE")
	cfgPath := configFlag(fs, e)
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	cfg, err := loadConfig(*cfgPath, e)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: valid (%d account(s), cache %s)\n", *cfgPath, len(cfg.Accounts), cfg.Cache.Backend)
	return nil
}

func cmdStatus(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "status", "--config FILE [--server URL]")
	cfgPath := configFlag(fs, e)
	server := fs.String("server", "", "daemon URL (default: http://<api.listen> from the config)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	var cfg *config.Config
	if *server == "" {
		var err error
		if cfg, err = loadConfig(*cfgPath, e); err != nil {
			return err
		}
	}
	api, err := daemonFor(*server, cfg, e)
	if err != nil {
		return err
	}
	var out map[string]any
	code, err := callAPI(ctx, http.MethodGet, api.base+"/v1/status", api.token, &out)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("daemon answered HTTP %d: %v", code, out["error"])
	}
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// cmdHealthcheck probes a daemon's health endpoint, for container
// HEALTHCHECKs that have no shell or curl: exit 0 on HTTP 200, 1 otherwise.
func cmdHealthcheck(ctx context.Context, e env, args []string) error {
	fs := newFlags(e, "healthcheck", "[--url URL] [--timeout D]")
	u := fs.String("url", "http://127.0.0.1:8080/healthz", "health endpoint to probe")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if pos, err := parse(fs, args); err != nil {
		return err
	} else if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *u, nil)
	if err != nil {
		return usagef("--url: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered HTTP %d", *u, resp.StatusCode)
	}
	fmt.Fprintln(e.stdout, "healthy")
	return nil
}
