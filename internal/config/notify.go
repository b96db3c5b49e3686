package config

import (
	"fmt"
	"net/url"
	"slices"
	"time"
)

// Notify configures who is told when an account needs attention.
type Notify struct {
	// Webhooks receive a signed JSON POST for each event they subscribe to.
	Webhooks []Webhook `yaml:"webhooks"`
}

// Webhook is one receiver of notifications.
type Webhook struct {
	// URL receives a POST per event: https://, or http:// for a receiver on
	// the same host or private network.
	URL string `yaml:"url"`
	// SecretFile (or SecretEnv) holds the key of the HMAC-SHA256 signature
	// sent in X-Dirsync-Signature ("sha256=<hex>" over "<timestamp>.<body>",
	// the timestamp in X-Dirsync-Timestamp). Required: unsigned deliveries
	// could be forged by anyone who can reach the receiver.
	SecretFile string `yaml:"secret_file"`
	SecretEnv  string `yaml:"secret_env"`
	// Events this receiver gets: hold, sync_failed, recovered, release.
	// Default: all of them.
	Events []string `yaml:"events"`
	// Format is json (default: dirsync's event document) or slack (a Slack
	// incoming-webhook payload: {"text": …}).
	Format string `yaml:"format"`
	// SyncFailedAfter is how many consecutive failed passes of an account
	// make a sync_failed event (one per failure streak). Default 3.
	SyncFailedAfter int `yaml:"sync_failed_after"`
	// Timeout bounds one delivery attempt. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
}

// Notification events.
const (
	EventHold       = "hold"
	EventSyncFailed = "sync_failed"
	EventRecovered  = "recovered"
	EventRelease    = "release"
)

// NotifyEvents lists every event, in documentation order.
func NotifyEvents() []string {
	return []string{EventHold, EventSyncFailed, EventRecovered, EventRelease}
}

// Defaults of notify.webhooks[].
const (
	DefaultWebhookSyncFailedAfter = 3
	DefaultWebhookTimeout         = 5 * time.Second
)

func (n *Notify) applyDefaults(c *Config) {
	for i := range n.Webhooks {
		w := &n.Webhooks[i]
		w.SecretFile = c.path(w.SecretFile)
		if len(w.Events) == 0 {
			w.Events = NotifyEvents()
		}
		if w.Format == "" {
			w.Format = "json"
		}
		if w.SyncFailedAfter == 0 {
			w.SyncFailedAfter = DefaultWebhookSyncFailedAfter
		}
		if w.Timeout == 0 {
			w.Timeout = DefaultWebhookTimeout
		}
	}
}

func (n *Notify) validate(ps *problems, getenv func(string) string) {
	for i, w := range n.Webhooks {
		p := fmt.Sprintf("notify.webhooks[%d]", i)
		u, err := url.Parse(w.URL)
		switch {
		case w.URL == "":
			ps.add(p+".url", "required: the receiver's URL, e.g. https://hooks.example/dirsync")
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			ps.add(p+".url", "%q is not an http(s) URL", w.URL)
		}
		checkSecret(ps, p+".secret", w.SecretFile, w.SecretEnv, true, getenv)
		for j, e := range w.Events {
			if !slices.Contains(NotifyEvents(), e) {
				ps.add(fmt.Sprintf("%s.events[%d]", p, j), "%q is not an event; use hold, sync_failed, recovered or release", e)
			}
		}
		if w.Format != "json" && w.Format != "slack" {
			ps.add(p+".format", "%q is not a format; use json or slack", w.Format)
		}
		if w.SyncFailedAfter < 1 {
			ps.add(p+".sync_failed_after", "%d is not a number of passes; use 1 or more", w.SyncFailedAfter)
		}
		if w.Timeout < 0 {
			ps.add(p+".timeout", "must be positive, e.g. 5s")
		}
	}
}
