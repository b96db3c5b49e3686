package deploytest

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

const grafanaDashboard = "deployments/grafana/dirsync.json"

// dashboard is the part of Grafana's dashboard JSON model the checks read.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

// promFunctions are the PromQL functions and aggregations the dashboard may
// use (and Grafana's label_values in variable queries).
var promFunctions = []string{
	"sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile", "stddev",
	"rate", "irate", "increase", "delta", "histogram_quantile", "time", "vector",
	"sort", "sort_desc", "abs", "clamp_min", "clamp_max", "label_values", "absent",
}

var promKeywords = []string{"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}

var (
	promStringRE   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchersRE = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	promGroupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdentRE    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promNumberRE   = regexp.MustCompile(`\b\d+(\.\d+)?([eE][+-]?\d+)?\b`)
)

// metricNames returns the metric names a PromQL expression reads, and any
// function it calls that promFunctions does not know.
func metricNames(expr string) (metrics, unknownFuncs []string) {
	s := promStringRE.ReplaceAllString(expr, `""`)
	s = promMatchersRE.ReplaceAllString(s, " ")
	s = promGroupingRE.ReplaceAllString(s, " ")
	s = promNumberRE.ReplaceAllString(s, " ")
	for _, loc := range promIdentRE.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		switch {
		case slices.Contains(promKeywords, id):
		case strings.HasPrefix(rest, "("):
			if !slices.Contains(promFunctions, id) {
				unknownFuncs = append(unknownFuncs, id)
			}
		default:
			metrics = append(metrics, id)
		}
	}
	// label_values(metric, label): the label is not a metric.
	if strings.HasPrefix(strings.TrimSpace(expr), "label_values(") && len(metrics) == 2 {
		metrics = metrics[:1]
	}
	return metrics, unknownFuncs
}

// exposedMetrics scrapes /metrics of a real daemon that has synced the
// quick-start directory and served a sign-in lookup, and returns every
// metric family it exposes (histograms also by their _bucket, _sum and
// _count series).
func exposedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	d := startDaemon(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, err := httpStatus(d.url("/readyz")); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful sync within 30s\n%s", d.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := httpStatus(d.url("/v1/access/ann@acme.example")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(d.url("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
			if f[3] == "histogram" || f[3] == "summary" {
				out[f[2]+"_bucket"], out[f[2]+"_sum"], out[f[2]+"_count"] = true, true, true
			}
		} else if line != "" && !strings.HasPrefix(line, "#") {
			out[promIdentRE.FindString(line)] = true
		}
	}
	return out
}

// declaredMetrics are the dirsync_ families internal/sync/metrics defines:
// vectors that have no series yet (no Okta account, no read error so far)
// are not in a fresh daemon's output.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "internal/sync/metrics/metrics.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?:Name: |NewDesc\()"(dirsync_[a-z_]+)"`).FindAllStringSubmatch(string(src), -1) {
		out[m[1]] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			out[m[1]+suffix] = true
		}
	}
	if len(out) < 40 {
		t.Fatalf("found only %d metric names in internal/sync/metrics/metrics.go", len(out)/4)
	}
	return out
}

// TestGrafanaDashboard checks deployments/grafana/dirsync.json is a Grafana
// dashboard (uid, title, schemaVersion, panels with unique ids, positions
// and PromQL targets on the datasource variable) and that every expression,
// panel and variable query alike, reads only metrics a real dirsync exposes
// (or internal/sync/metrics declares, for series a fresh daemon has not made
// yet) and calls only PromQL functions.
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, grafanaDashboard))
	if err != nil {
		t.Fatal(err)
	}
	var db dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&db); err != nil {
		t.Fatalf("%s: %v", grafanaDashboard, err)
	}
	if db.UID == "" || db.Title == "" || db.SchemaVersion < 30 || len(db.Panels) == 0 {
		t.Fatalf("not a Grafana dashboard: uid %q title %q schemaVersion %d, %d panels", db.UID, db.Title, db.SchemaVersion, len(db.Panels))
	}
	vars := map[string]string{}
	exprs := map[string]string{} // expression -> where
	for _, v := range db.Templating.List {
		vars[v.Name] = v.Type
		if q, ok := v.Query.(map[string]any); ok {
			if s, _ := q["query"].(string); s != "" {
				exprs[s] = "variable " + v.Name
			}
		}
	}
	if vars["datasource"] != "datasource" || vars["account"] != "query" {
		t.Errorf("variables %v: want a datasource variable and an account query variable", vars)
	}

	ids := map[int]bool{}
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d is used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("panel %q has no gridPos", p.Title)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q does not use the datasource variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no targets", p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Expr == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				exprs[tg.Expr] = "panel " + p.Title
			}
		}
	}
	walk(db.Panels)

	exposed := exposedMetrics(t)
	declared := declaredMetrics(t)
	seen := map[string]bool{}
	for expr, where := range exprs {
		metrics, funcs := metricNames(expr)
		if len(metrics) == 0 && !strings.Contains(expr, "time()") {
			t.Errorf("%s: no metric found in %q", where, expr)
		}
		for _, f := range funcs {
			t.Errorf("%s: %s( is not a PromQL function the check knows: %q", where, f, expr)
		}
		for _, m := range metrics {
			seen[m] = true
			if !exposed[m] && !(strings.HasPrefix(m, "dirsync_") && declared[m]) {
				t.Errorf("%s: metric %s does not exist (not exposed by dirsync nor declared in internal/sync/metrics): %q", where, m, expr)
			}
		}
	}
	// The panels an on-call admin reads first.
	for _, m := range []string{"dirsync_sync_runs_total", "dirsync_safeguard_hold", "dirsync_last_success_timestamp_seconds", "dirsync_sync_duration_seconds_bucket", "dirsync_published_changes_total", "dirsync_api_lookups_total"} {
		if !seen[m] {
			t.Errorf("no panel reads %s", m)
		}
	}
}

// TestDashboardCheckFindsMetrics: the expression check finds the metrics of
// expressions shaped like the dashboard's, and would report a misspelt one.
func TestDashboardCheckFindsMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, mode) (rate(dirsync_sync_duration_seconds_bucket{account=~"$account"}[5m])))`:                           {"dirsync_sync_duration_seconds_bucket"},
		`count((sum by (account) (increase(x_total{result="failed"}[15m])) > 0) unless (sum by (account) (increase(y_total[15m])) > 0)) or vector(0)`: {"x_total", "y_total"},
		`max(time() - max by (account) (dirsync_last_success_timestamp_seconds{account=~"a|b"}))`:                                                     {"dirsync_last_success_timestamp_seconds"},
		`label_values(dirsync_sync_runs_total, account)`:                                                                                              {"dirsync_sync_runs_total"},
		`rate(process_cpu_seconds_total{job=~"$job"}[5m]) / on (instance) group_left up`:                                                              {"process_cpu_seconds_total", "up"},
	} {
		got, funcs := metricNames(expr)
		if !slices.Equal(got, want) || len(funcs) > 0 {
			t.Errorf("metricNames(%q) = %v (unknown functions %v), want %v", expr, got, funcs, want)
		}
	}
	if _, funcs := metricNames(`sum(ratee(dirsync_users[5m]))`); !slices.Equal(funcs, []string{"ratee"}) {
		t.Errorf("a misspelt function was not reported: %v", funcs)
	}
}
