// Package oktafake is an in-process fake of the Okta Management API, for
// testing code that uses the real okta-sdk-golang client.
//
// It serves the read endpoints a directory poller needs, following Okta's
// published API (see testdata/okta-management-subset.yaml, which the tests
// validate responses against):
//
//	GET /api/v1/users               filter, search, limit, after
//	GET /api/v1/users/{idOrLogin}
//	GET /api/v1/groups              filter, search, q, limit, after
//	GET /api/v1/groups/{groupId}
//	GET /api/v1/groups/{groupId}/users  limit, after
//	GET /api/v1/logs                since, until, filter, limit, after (polling)
//
// Like Okta it answers with application/json bodies, separate Link header
// lines for rel="self" and rel="next", X-Rate-Limit-Limit/Remaining/Reset,
// X-Okta-Request-Id and Date headers, error objects with errorCode,
// errorSummary, errorLink, errorId and errorCauses, and 401 E0000011 for a
// wrong API token. Status changes and membership changes append System Log
// events. Faults (429, 5xx, dropped connections, malformed JSON, latency) are
// injected with Inject and SetLatency; Counters reports what was served.
//
// All methods are safe for concurrent use.
package oktafake

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"
)

// User statuses (Okta's UserStatus enum).
const (
	StatusStaged          = "STAGED"
	StatusProvisioned     = "PROVISIONED"
	StatusActive          = "ACTIVE"
	StatusRecovery        = "RECOVERY"
	StatusPasswordExpired = "PASSWORD_EXPIRED"
	StatusLockedOut       = "LOCKED_OUT"
	StatusSuspended       = "SUSPENDED"
	StatusDeprovisioned   = "DEPROVISIONED"
)

// Group types (Okta's GroupType enum).
const (
	GroupOkta    = "OKTA_GROUP"
	GroupApp     = "APP_GROUP"
	GroupBuiltIn = "BUILT_IN"
)

// Options configure a Server.
type Options struct {
	// Token is the API token clients must send as "SSWS <token>".
	// Default "test-token".
	Token string
	// TLS serves https with a self-signed certificate; use Server.Client.
	TLS bool
	// RateLimit is the X-Rate-Limit-Limit of every endpoint: requests per
	// window before the fake answers 429. Default 600 (Okta's usual
	// per-minute limit for /api/v1/users).
	RateLimit int
	// RateWindow is the rate-limit window, a whole number of seconds
	// (windows start at multiples of it). Default one minute.
	RateWindow time.Duration
}

// Server is a running fake Okta org.
type Server struct {
	// URL is the org URL, e.g. "http://127.0.0.1:41234" (no trailing slash).
	URL string

	httpServer *httptest.Server
	token      string
	limit      int
	window     time.Duration

	mu       sync.Mutex
	offset   time.Duration // added to the wall clock (Advance)
	nextID   int
	users    map[string]*user
	groups   map[string]*group
	events   []logEvent
	faults   []*faultState
	latency  time.Duration
	counters Counters
	// windowStart and windowUsed track the current rate-limit window.
	windowStart time.Time
	windowUsed  int
}

type user struct {
	id            string
	status        string
	created       time.Time
	activated     time.Time // zero: null
	statusChanged time.Time // zero: null
	lastUpdated   time.Time
	login         string
	email         string
	firstName     string
	lastName      string
}

type group struct {
	id                    string
	typ                   string
	name                  string
	description           string
	created               time.Time
	lastUpdated           time.Time
	lastMembershipUpdated time.Time
	members               map[string]bool
}

type logEvent struct {
	uuid      string
	published time.Time
	eventType string
	display   string
	targets   []logTarget
}

type logTarget struct {
	id, typ, alternateID, displayName string
}

// New starts a fake org; Close stops it.
func New(opts Options) *Server {
	s := &Server{
		token:  opts.Token,
		limit:  opts.RateLimit,
		window: opts.RateWindow,
		users:  map[string]*user{},
		groups: map[string]*group{},
	}
	if s.token == "" {
		s.token = "test-token"
	}
	if s.limit <= 0 {
		s.limit = 600
	}
	if s.window < time.Second {
		s.window = time.Minute
	}
	s.window = s.window.Truncate(time.Second)
	if opts.TLS {
		s.httpServer = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	} else {
		s.httpServer = httptest.NewServer(http.HandlerFunc(s.serve))
	}
	s.URL = s.httpServer.URL
	return s
}

// Close stops the server and waits for its handlers to return.
func (s *Server) Close() { s.httpServer.Close() }

// Client returns an http.Client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.httpServer.Client() }

// Token is the API token the server accepts.
func (s *Server) Token() string { return s.token }

// Now is the fake org's clock: the wall clock plus every Advance.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now()
}

func (s *Server) now() time.Time { return time.Now().Add(s.offset).UTC() }

// Advance moves the org's clock forward by d: timestamps of later changes,
// the Date header and rate-limit windows all follow it.
func (s *Server) Advance(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset += d
}

func (s *Server) newID(prefix string) string {
	s.nextID++
	// Okta ids are 20 characters starting with a type prefix; the fake's
	// are numbered so that sorting by id is creation order, which makes
	// "after" cursors stable.
	return fmt.Sprintf("%s%017d", prefix, s.nextID)
}

// UserSpec describes a user to create.
type UserSpec struct {
	// Login is profile.login; required.
	Login string
	// Email is profile.email; empty leaves it out of the profile (Okta
	// allows that when the org's profile schema does not require it).
	Email     string
	FirstName string
	LastName  string
	// Status defaults to ACTIVE.
	Status string
}

// AddUser creates a user and returns its id.
func (s *Server) AddUser(spec UserSpec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	u := &user{
		id:          s.newID("00u"),
		status:      spec.Status,
		created:     now,
		lastUpdated: now,
		login:       spec.Login,
		email:       spec.Email,
		firstName:   spec.FirstName,
		lastName:    spec.LastName,
	}
	if u.status == "" {
		u.status = StatusActive
	}
	if u.status != StatusStaged {
		u.activated = now
		u.statusChanged = now
	}
	s.users[u.id] = u
	s.logLocked("user.lifecycle.create", "Create Okta user", userTarget(u))
	return u.id
}

// AddGroup creates a group of type typ (OKTA_GROUP, APP_GROUP or BUILT_IN)
// and returns its id.
func (s *Server) AddGroup(name, typ string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	g := &group{
		id:                    s.newID("00g"),
		typ:                   typ,
		name:                  name,
		created:               now,
		lastUpdated:           now,
		lastMembershipUpdated: now,
		members:               map[string]bool{},
	}
	switch typ {
	case GroupBuiltIn:
		g.description = "All users in your organization"
	case GroupApp:
		g.description = "Imported from Active Directory"
	}
	s.groups[g.id] = g
	return g.id
}

// SetStatus changes a user's status, bumping statusChanged and lastUpdated
// and logging the matching lifecycle event. Like Okta, it leaves the user's
// group memberships alone.
func (s *Server) SetStatus(userID, status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(userID)
	old := u.status
	if old == status {
		return
	}
	now := s.now()
	u.status = status
	u.statusChanged = now
	u.lastUpdated = now
	if status == StatusActive && u.activated.IsZero() {
		u.activated = now
	}
	eventType, display := lifecycleEvent(old, status)
	s.logLocked(eventType, display, userTarget(u))
}

// lifecycleEvent names the System Log event for a status transition.
func lifecycleEvent(from, to string) (eventType, display string) {
	switch to {
	case StatusSuspended:
		return "user.lifecycle.suspend", "Suspend Okta user"
	case StatusDeprovisioned:
		return "user.lifecycle.deactivate", "Deactivate Okta user"
	case StatusLockedOut:
		return "user.account.lock", "Max sign in attempts exceeded"
	case StatusRecovery:
		return "user.account.reset_password", "Fired when the user's Okta password is reset"
	case StatusPasswordExpired:
		return "user.account.expire_password", "Fired when the user's Okta password is expired"
	case StatusActive:
		switch from {
		case StatusSuspended:
			return "user.lifecycle.unsuspend", "Unsuspend Okta user"
		case StatusDeprovisioned:
			return "user.lifecycle.reactivate", "Reactivate Okta user"
		case StatusLockedOut:
			return "user.account.unlock", "Unlock user account"
		}
		return "user.lifecycle.activate", "Activate Okta user"
	}
	return "user.lifecycle.update", "Update Okta user"
}

// SetEmail changes a user's profile.email ("" removes it).
func (s *Server) SetEmail(userID, email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.mustUser(userID)
	u.email = email
	u.lastUpdated = s.now()
	s.logLocked("user.account.update_profile", "Update user profile for Okta", userTarget(u))
}

// AddMember adds a user to a group, bumping the group's
// lastMembershipUpdated and logging group.user_membership.add.
func (s *Server) AddMember(groupID, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, u := s.mustGroup(groupID), s.mustUser(userID)
	if g.members[userID] {
		return
	}
	g.members[userID] = true
	g.lastMembershipUpdated = s.now()
	s.logLocked("group.user_membership.add", "Add user to group membership", userTarget(u), groupTarget(g))
}

// RemoveMember removes a user from a group, bumping the group's
// lastMembershipUpdated and logging group.user_membership.remove.
func (s *Server) RemoveMember(groupID, userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, u := s.mustGroup(groupID), s.mustUser(userID)
	if !g.members[userID] {
		return
	}
	delete(g.members, userID)
	g.lastMembershipUpdated = s.now()
	s.logLocked("group.user_membership.remove", "Remove user from group membership", userTarget(u), groupTarget(g))
}

func (s *Server) mustUser(id string) *user {
	u, ok := s.users[id]
	if !ok {
		panic("oktafake: no user " + id)
	}
	return u
}

func (s *Server) mustGroup(id string) *group {
	g, ok := s.groups[id]
	if !ok {
		panic("oktafake: no group " + id)
	}
	return g
}

func userTarget(u *user) logTarget {
	return logTarget{id: u.id, typ: "User", alternateID: u.login, displayName: strings.TrimSpace(u.firstName + " " + u.lastName)}
}

func groupTarget(g *group) logTarget {
	return logTarget{id: g.id, typ: "UserGroup", alternateID: "unknown", displayName: g.name}
}

func (s *Server) logLocked(eventType, display string, targets ...logTarget) {
	n := len(s.events) + 1
	s.events = append(s.events, logEvent{
		uuid:      fmt.Sprintf("%08x-0000-11ef-8000-%012x", n, n),
		published: s.now(),
		eventType: eventType,
		display:   display,
		targets:   targets,
	})
}

// FaultKind is a failure the server can inject.
type FaultKind int

// Injectable faults.
const (
	// TooManyRequests answers 429 E0000047 with X-Rate-Limit-Remaining 0
	// and a Reset at the current second, as Okta does when a limit is hit.
	TooManyRequests FaultKind = iota + 1
	// TooManyRequestsNoReset answers 429 without X-Rate-Limit-Reset
	// (the SDK treats that as a permanent error).
	TooManyRequestsNoReset
	// ServerError answers 500 E0000009.
	ServerError
	// DropConnection closes the connection without answering.
	DropConnection
	// MalformedJSON answers 200 application/json with a truncated body.
	MalformedJSON
)

func (k FaultKind) String() string {
	switch k {
	case TooManyRequests:
		return "429"
	case TooManyRequestsNoReset:
		return "429-no-reset"
	case ServerError:
		return "500"
	case DropConnection:
		return "drop"
	case MalformedJSON:
		return "malformed-json"
	}
	return "unknown"
}

// Fault injects Kind into every Every-th API request whose path starts with
// PathPrefix, at most Times times.
type Fault struct {
	Kind FaultKind
	// Every is the period: 1 hits every matching request, 3 every third.
	// Default 1.
	Every int
	// Times caps the number of injections; 0 means no cap.
	Times int
	// PathPrefix restricts the fault, e.g. "/api/v1/groups/"; empty
	// matches every API request.
	PathPrefix string
}

type faultState struct {
	Fault
	seen, injected int
}

// Inject adds a fault. Faults are checked in the order they were added; the
// first that fires answers the request.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Every <= 0 {
		f.Every = 1
	}
	s.faults = append(s.faults, &faultState{Fault: f})
}

// ClearFaults removes every injected fault and the latency.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
	s.latency = 0
}

// SetLatency delays every response by d (a request whose context ends
// first is abandoned).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// Counters is what the server has served since the last ResetCounters.
type Counters struct {
	// Requests counts every request that reached the server, including
	// answered faults.
	Requests int
	// ByRoute counts requests by route, e.g. "GET /api/v1/groups/{id}/users".
	ByRoute map[string]int
	// Injected counts injected faults by kind name ("429", "500", "drop",
	// "malformed-json", "429-no-reset").
	Injected map[string]int
	// RateLimited counts 429s answered because the window's budget ran out.
	RateLimited int
	// Unauthorized counts 401/403 answers to a bad or missing token.
	Unauthorized int
	// MaxWindowUsed is the largest number of requests served in one
	// rate-limit window.
	MaxWindowUsed int
}

// Counters returns a copy of the counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.counters
	c.ByRoute = copyMap(c.ByRoute)
	c.Injected = copyMap(c.Injected)
	return c
}

// ResetCounters zeroes the counters.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters = Counters{}
}

func copyMap(m map[string]int) map[string]int {
	c := make(map[string]int, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func bump(m *map[string]int, key string) {
	if *m == nil {
		*m = map[string]int{}
	}
	(*m)[key]++
}

// sortedUsers returns the users sorted by id (creation order).
func (s *Server) sortedUsers() []*user {
	out := make([]*user, 0, len(s.users))
	for _, u := range s.users {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func (s *Server) sortedGroups() []*group {
	out := make([]*group, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}
