package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/entitlement/store"

	"github.com/dirsync/dirsync/internal/entitlement/mapper"

	"github.com/redis/go-redis/v9"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/entitlement/accesscache"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

func decision(email string, allowed bool, p entitlement.Permission, r entitlement.Reason) *entitlement.Decision {
	d := entitlement.Denied(email, r)
	d.Account, d.Allowed, d.Permission = "acme", allowed, p
	return &d
}

// TestConsumesPublishedChanges publishes changes with dirsync's real Redis
// writer and reads them back with the example consumer: one line per change
// in order, the suspension flagged as lost access, and every entry
// acknowledged so a restarted consumer does not see them again.
func TestConsumesPublishedChanges(t *testing.T) {
	rs := servertest.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer client.Close()
	ctx := context.Background()
	w := store.NewRedis(client, "dirsync")

	alicePro := decision("alice@acme.example", true, entitlement.PermissionPro, entitlement.ReasonGranted)
	publish := func(changes ...mapper.Change) {
		t.Helper()
		for i := range changes {
			if changes[i].New != nil {
				changes[i].Next = mapper.PublishedOf(changes[i].New)
			}
		}
		if err := w.Apply(ctx, "acme", changes, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	// Before the consumer group exists: read with --start 0.
	publish(mapper.Change{Email: "alice@acme.example", New: alicePro})

	pr, pw := io.Pipe()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- run(cctx, []string{"--redis", rs.Addr, "--account", "acme", "--group", "meetings", "--consumer", "c1", "--start", "0"},
			func(string) string { return "" }, pw)
		pw.Close()
	}()
	lines := bufio.NewScanner(pr)
	next := func() Change {
		t.Helper()
		if !lines.Scan() {
			t.Fatalf("consumer ended: %v", <-done)
		}
		var c Change
		if err := json.Unmarshal(lines.Bytes(), &c); err != nil {
			t.Fatalf("%v: %s", err, lines.Text())
		}
		return c
	}

	c := next()
	if c.Email != "alice@acme.example" || !c.Allowed || c.Permission != "pro" || c.OldAllowed || c.LostAccess {
		t.Errorf("first change %+v: want alice gaining pro", c)
	}
	old := mapper.PublishedOf(alicePro)
	publish(
		mapper.Change{Email: "alice@acme.example", Old: &old,
			New: decision("alice@acme.example", false, entitlement.PermissionNone, entitlement.ReasonSuspended)},
		mapper.Change{Email: "bob@acme.example",
			New: decision("bob@acme.example", true, entitlement.PermissionBasic, entitlement.ReasonGranted)},
	)
	c = next()
	if c.Email != "alice@acme.example" || c.Allowed || c.Reason != "suspended" || !c.OldAllowed || c.OldPermission != "pro" || !c.LostAccess {
		t.Errorf("second change %+v: want alice suspended, lost access", c)
	}
	if _, err := time.Parse(time.RFC3339Nano, c.At); err != nil {
		t.Errorf("at %q: %v", c.At, err)
	}
	c = next()
	if c.Email != "bob@acme.example" || !c.Allowed || c.Permission != "basic" || c.LostAccess {
		t.Errorf("third change %+v: want bob gaining basic", c)
	}

	cancel()
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("consumer stopped with %v, want context.Canceled", err)
	}
	pending, err := client.XPending(ctx, accesscache.NewKeys("dirsync").Changes("acme"), "meetings").Result()
	if err != nil {
		t.Fatal(err)
	}
	if pending.Count != 0 {
		t.Errorf("%d entries left unacknowledged", pending.Count)
	}
}
