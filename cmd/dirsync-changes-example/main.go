// Command dirsync-changes-example consumes an account's change stream the
// way a meetings service should: in a Redis consumer group, so several
// instances share the work and an entry that was read but not handled (a
// crash) is handed out again; each entry is acknowledged only after it was
// handled. It prints one JSON line per change. See
// docs/sign-in-integration.md.
//
//	dirsync-changes-example --redis 127.0.0.1:6379 --account acme --group meetings
//
// Handling here is printing; a real consumer ends the live sessions of a
// user whose allowed turned from 1 to 0, and re-reads the user's decision
// (one GET) before acting on anything else: entries say what changed, the
// decision key says what is true now.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement/accesscache"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout)
	stop()
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "dirsync-changes-example:", err)
		os.Exit(1)
	}
}

// Change is one change stream entry (schema v1).
type Change struct {
	ID            string `json:"id"` // the stream entry id
	Email         string `json:"email"`
	Account       string `json:"account"`
	Allowed       bool   `json:"allowed"`
	Permission    string `json:"permission"`
	Reason        string `json:"reason"`
	OldAllowed    bool   `json:"old_allowed"`
	OldPermission string `json:"old_permission"`
	At            string `json:"at"`
	// LostAccess is true when the user could sign in before and cannot now:
	// the case where live sessions must end.
	LostAccess bool `json:"lost_access"`
}

func parseChange(m redis.XMessage) (Change, error) {
	field := func(k string) string { s, _ := m.Values[k].(string); return s }
	c := Change{
		ID: m.ID, Email: field("email"), Account: field("account"),
		Allowed: field("allowed") == "1", Permission: field("permission"), Reason: field("reason"),
		OldAllowed: field("old_allowed") == "1", OldPermission: field("old_permission"), At: field("at"),
	}
	if c.Email == "" || c.Account == "" || c.Reason == "" {
		return Change{}, fmt.Errorf("entry %s is not a dirsync change: %v", m.ID, m.Values)
	}
	c.LostAccess = c.OldAllowed && !c.Allowed
	return c, nil
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("dirsync-changes-example", flag.ContinueOnError)
	addr := fs.String("redis", "127.0.0.1:6379", "Redis address")
	passwordEnv := fs.String("password-env", "REDIS_PASSWORD", "environment variable holding the Redis password (empty: none)")
	prefix := fs.String("prefix", "dirsync", "cache.redis.key_prefix of the dirsync deployment")
	account := fs.String("account", "", "account id whose changes to follow (required)")
	group := fs.String("group", "meetings", "consumer group: one per consuming service")
	consumer := fs.String("consumer", hostname(), "this instance's name within the group")
	start := fs.String("start", "$", "where a new group starts: $ (new entries only) or 0 (the whole retained stream)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *account == "" {
		return errors.New("--account is required")
	}
	client := redis.NewClient(&redis.Options{Addr: *addr, Password: getenv(*passwordEnv)})
	defer client.Close()
	stream := accesscache.NewKeys(*prefix).Changes(*account)

	// Create the group once; BUSYGROUP means it exists (another instance
	// or an earlier run created it) and keeps its position.
	if err := client.XGroupCreateMkStream(ctx, stream, *group, *start).Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		return fmt.Errorf("create consumer group: %w", err)
	}
	enc := json.NewEncoder(out)
	// First our own pending entries (read before a crash, never acked),
	// then new ones (">").
	cursor := "0"
	for {
		res, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: *group, Consumer: *consumer, Streams: []string{stream, cursor}, Count: 100, Block: 5 * time.Second,
		}).Result()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, redis.Nil):
			continue // nothing new within Block
		case err != nil:
			return fmt.Errorf("read changes: %w", err)
		}
		handled := 0
		for _, s := range res {
			for _, m := range s.Messages {
				handled++
				c, err := parseChange(m)
				if err != nil {
					fmt.Fprintln(os.Stderr, "skipping:", err)
				} else if err := enc.Encode(c); err != nil {
					return err
				}
				// Acknowledge what was handled even when shutting down,
				// so a restart does not handle it twice.
				actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				err = client.XAck(actx, stream, *group, m.ID).Err()
				cancel()
				if err != nil {
					return fmt.Errorf("ack %s: %w", m.ID, err)
				}
			}
		}
		if cursor == "0" && handled == 0 {
			cursor = ">" // no pending entries left
		}
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "consumer"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}
