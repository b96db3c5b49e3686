// Package metrics exposes dirsync's Prometheus metrics. Names follow the
// Prometheus conventions (dirsync_…_seconds, _total); docs/operations.md
// lists each metric and the alerts built on them.
package metrics

import (
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dirsync/dirsync/entitlement"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/sync/engine"
)

// Source is one account's directory source as the metrics see it.
type Source struct {
	// Kind is the account's directory type (the source label).
	Kind string
	// Stats is read at scrape time.
	Stats StatsReader
}

// StatsReader is a directory source's own counters.
type StatsReader interface {
	Stats() directory.SourceStats
}

// Metrics holds every dirsync metric on its own registry.
type Metrics struct {
	reg *prometheus.Registry

	runDuration *prometheus.HistogramVec
	runs        *prometheus.CounterVec
	users       *prometheus.GaugeVec
	skipped     *prometheus.GaugeVec
	changes     *prometheus.CounterVec
	lastSuccess *prometheus.GaugeVec
	hold        *prometheus.GaugeVec
	publish     *prometheus.HistogramVec
	readErrors  *prometheus.CounterVec
	sourcesMu   sync.Mutex
	sources     map[string]Source
	// skippedMu guards skippedReasons: the skip reasons each account's
	// last pass reported, so a reason gone since is deleted exactly (a
	// partial-match delete scans every series of every account).
	skippedMu      sync.Mutex
	skippedReasons map[string][]string
	requestsDesc   *prometheus.Desc
	rateLimitDesc  *prometheus.Desc
	entriesDesc    *prometheus.Desc
	remainingDesc  *prometheus.Desc
	hookEvents     *prometheus.CounterVec
	apiLookups     *prometheus.CounterVec
	lookupDuration prometheus.Histogram
}

// New returns the metrics, registered with Go and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		sources: map[string]Source{},
		runDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dirsync_sync_duration_seconds", Help: "Duration of sync passes.",
			Buckets: []float64{.005, .01, .05, .1, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"account", "mode", "result"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dirsync_sync_runs_total", Help: "Sync passes by result (published, unchanged, dry_run, held, failed).",
		}, []string{"account", "mode", "result"}),
		users: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dirsync_users", Help: "Published decisions by permission and reason, as of the last sync.",
		}, []string{"account", "permission", "reason"}),
		skipped: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dirsync_directory_skipped_objects", Help: "Directory objects left out of the last snapshot, by reason.",
		}, []string{"account", "reason"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dirsync_published_changes_total", Help: "Decisions written to or removed from the cache.",
		}, []string{"account"}),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dirsync_last_success_timestamp_seconds", Help: "Unix time of the last successful sync pass.",
		}, []string{"account", "mode"}),
		hold: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "dirsync_safeguard_hold", Help: "1 while a safeguard hold is pending for the account.",
		}, []string{"account"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "dirsync_cache_publish_duration_seconds", Help: "Time spent writing changes to the access cache per pass.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"account"}),
		readErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dirsync_directory_read_errors_total", Help: "Sync passes whose directory read failed.",
		}, []string{"account", "mode"}),
		hookEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dirsync_okta_event_hook_requests_total", Help: "Okta event hook requests by outcome.",
		}, []string{"outcome"}),
		apiLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dirsync_api_lookups_total", Help: "Sign-in lookups served over HTTP by outcome (allowed, denied, error).",
		}, []string{"outcome"}),
		lookupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "dirsync_api_lookup_duration_seconds", Help: "Latency of sign-in lookups served over HTTP.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 10),
		}),
		requestsDesc: prometheus.NewDesc("dirsync_directory_requests_total",
			"Requests sent to the directory (Okta: HTTP requests; LDAP: binds, StartTLS and search pages).", []string{"account", "source"}, nil),
		entriesDesc: prometheus.NewDesc("dirsync_directory_entries_read_total",
			"Entries received from the directory (LDAP sources).", []string{"account", "source"}, nil),
		rateLimitDesc: prometheus.NewDesc("dirsync_directory_rate_limited_total",
			"Requests the directory answered with HTTP 429.", []string{"account", "source"}, nil),
		remainingDesc: prometheus.NewDesc("dirsync_okta_rate_limit_remaining",
			"The last X-Rate-Limit-Remaining Okta sent.", []string{"account"}, nil),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.runDuration, m.runs, m.users, m.skipped, m.changes, m.lastSuccess, m.hold, m.publish, m.readErrors,
		m.hookEvents, m.apiLookups, m.lookupDuration, sourceCollector{m},
	)
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry the metrics live on (for tests and linting).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetSources replaces the set of sources whose counters are exported (on
// start-up and after a config reload).
func (m *Metrics) SetSources(sources map[string]Source) {
	m.sourcesMu.Lock()
	defer m.sourcesMu.Unlock()
	m.sources = maps.Clone(sources)
}

// PutSource adds or replaces one account's source (an account applied
// live), touching no other account.
func (m *Metrics) PutSource(account string, s Source) {
	m.sourcesMu.Lock()
	defer m.sourcesMu.Unlock()
	if m.sources == nil {
		m.sources = map[string]Source{}
	}
	m.sources[account] = s
}

// RemoveAccount drops a removed account's source and every series it had.
func (m *Metrics) RemoveAccount(account string) {
	m.sourcesMu.Lock()
	delete(m.sources, account)
	m.sourcesMu.Unlock()
	m.skippedMu.Lock()
	delete(m.skippedReasons, account)
	m.skippedMu.Unlock()
	l := prometheus.Labels{"account": account}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		m.runDuration, m.runs, m.users, m.skipped, m.changes, m.lastSuccess, m.hold, m.publish, m.readErrors,
	} {
		v.DeletePartialMatch(l)
	}
}

// ObserveRun records one pass.
func (m *Metrics) ObserveRun(r engine.Report) {
	if r.Result == "" {
		return
	}
	mode := string(r.Mode)
	m.runs.WithLabelValues(r.Account, mode, r.Result).Inc()
	m.runDuration.WithLabelValues(r.Account, mode, r.Result).Observe(r.DurationSeconds)
	if r.ReadFailed {
		m.readErrors.WithLabelValues(r.Account, mode).Inc()
	}
	if r.DryRun || r.Result == engine.ResultFailed {
		return
	}
	m.changes.WithLabelValues(r.Account).Add(float64(r.Changes.Published))
	if r.PublishSeconds > 0 {
		m.publish.WithLabelValues(r.Account).Observe(r.PublishSeconds)
	}
	if r.Result == engine.ResultUnchanged && r.Stats.Users == 0 {
		// An incremental pass that found nothing new: counts stand.
		m.lastSuccess.WithLabelValues(r.Account, mode).Set(float64(time.Now().Unix()))
		return
	}
	held := 0.0
	if r.Result == engine.ResultHeld {
		held = 1
	} else {
		m.lastSuccess.WithLabelValues(r.Account, mode).Set(float64(time.Now().Unix()))
	}
	m.hold.WithLabelValues(r.Account).Set(held)
	// Every (permission, reason) series of the account is set, to 0 when
	// none: nothing stale to delete.
	for _, reason := range allReasons {
		n := r.Stats.ByReason[reason]
		perm := string(entitlement.PermissionNone)
		if reason == entitlement.ReasonGranted {
			continue
		}
		m.users.WithLabelValues(r.Account, perm, string(reason)).Set(float64(n))
	}
	m.users.WithLabelValues(r.Account, string(entitlement.PermissionPro), string(entitlement.ReasonGranted)).Set(float64(r.Stats.ByPermission[entitlement.PermissionPro]))
	m.users.WithLabelValues(r.Account, string(entitlement.PermissionBasic), string(entitlement.ReasonGranted)).Set(float64(r.Stats.ByPermission[entitlement.PermissionBasic]))
	m.skippedMu.Lock()
	defer m.skippedMu.Unlock()
	for _, reason := range m.skippedReasons[r.Account] {
		if _, ok := r.Stats.Skipped[reason]; !ok {
			m.skipped.DeleteLabelValues(r.Account, reason)
		}
	}
	reasons := make([]string, 0, len(r.Stats.Skipped))
	for reason, n := range r.Stats.Skipped {
		m.skipped.WithLabelValues(r.Account, reason).Set(float64(n))
		reasons = append(reasons, reason)
	}
	if m.skippedReasons == nil {
		m.skippedReasons = map[string][]string{}
	}
	m.skippedReasons[r.Account] = reasons
}

var allReasons = []entitlement.Reason{
	entitlement.ReasonSuspended, entitlement.ReasonInactive, entitlement.ReasonLockedOut, entitlement.ReasonDuplicateIdentity,
	entitlement.ReasonNotInAccessGroup, entitlement.ReasonNoPermission, entitlement.ReasonGranted,
}

// HookEvent counts an Okta event hook request by outcome.
func (m *Metrics) HookEvent(outcome string) { m.hookEvents.WithLabelValues(outcome).Inc() }

// Lookup records one HTTP sign-in lookup.
func (m *Metrics) Lookup(outcome string, d time.Duration) {
	m.apiLookups.WithLabelValues(outcome).Inc()
	m.lookupDuration.Observe(d.Seconds())
}

// sourceCollector exports sources' own counters at scrape time.
type sourceCollector struct{ m *Metrics }

func (c sourceCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.m.requestsDesc
	ch <- c.m.rateLimitDesc
	ch <- c.m.remainingDesc
	ch <- c.m.entriesDesc
}

func (c sourceCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.sourcesMu.Lock()
	defer c.m.sourcesMu.Unlock()
	for account, s := range c.m.sources {
		st := s.Stats.Stats()
		ch <- prometheus.MustNewConstMetric(c.m.requestsDesc, prometheus.CounterValue, float64(st.Requests), account, s.Kind)
		ch <- prometheus.MustNewConstMetric(c.m.rateLimitDesc, prometheus.CounterValue, float64(st.RateLimited), account, s.Kind)
		if st.EntriesRead >= 0 {
			ch <- prometheus.MustNewConstMetric(c.m.entriesDesc, prometheus.CounterValue, float64(st.EntriesRead), account, s.Kind)
		}
		if st.RateLimitRemaining >= 0 && s.Kind == "okta" {
			ch <- prometheus.MustNewConstMetric(c.m.remainingDesc, prometheus.GaugeValue, float64(st.RateLimitRemaining), account)
		}
	}
}
