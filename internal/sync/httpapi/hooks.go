package httpapi

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// oktaVerify answers Okta's one-time event hook verification: it echoes
// the x-okta-verification-challenge header as {"verification": …}. Okta
// sends the hook's configured authorization header with it too.
func (s *server) oktaVerify(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.hookAccounts(r); !ok {
		s.hookOutcome("unauthorized")
		WriteError(w, http.StatusUnauthorized, "unknown or missing event hook secret")
		return
	}
	challenge := r.Header.Get("X-Okta-Verification-Challenge")
	if challenge == "" {
		s.hookOutcome("bad_request")
		WriteError(w, http.StatusBadRequest, "missing x-okta-verification-challenge header")
		return
	}
	s.hookOutcome("verified")
	WriteJSON(w, http.StatusOK, map[string]string{"verification": challenge})
}

// oktaEvent receives event deliveries. Events are at-least-once and
// unordered, so they are only triggers: each delivery starts an immediate
// incremental pass of the accounts the secret belongs to, which re-reads
// the directory; the payload is parsed only to reject garbage.
func (s *server) oktaEvent(w http.ResponseWriter, r *http.Request) {
	accounts, ok := s.hookAccounts(r)
	if !ok {
		s.hookOutcome("unauthorized")
		WriteError(w, http.StatusUnauthorized, "unknown or missing event hook secret")
		return
	}
	var body struct {
		EventType string `json:"eventType"`
		Data      struct {
			Events []struct {
				EventType string `json:"eventType"`
			} `json:"events"`
		} `json:"data"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		s.hookOutcome("bad_request")
		WriteError(w, http.StatusBadRequest, "body is not an Okta event hook JSON document")
		return
	}
	queued := 0
	for _, a := range accounts {
		if s.o.Trigger != nil && s.o.Trigger(a) {
			queued++
		}
	}
	s.hookOutcome("triggered")
	// Okta wants a quick 200 (it times out after 3 s and retries once).
	WriteJSON(w, http.StatusOK, map[string]any{"accounts": accounts, "queued": queued, "events": len(body.Data.Events)})
}

// hookAccounts returns the accounts whose hook secret the request carries.
// Every configured secret is compared in constant time.
func (s *server) hookAccounts(r *http.Request) ([]string, bool) {
	var out []string
	for _, h := range s.o.OktaHooks {
		got := r.Header.Get(h.Header)
		if h.Secret != "" && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(h.Secret)) == 1 {
			out = append(out, h.Account)
		}
	}
	return out, len(out) > 0
}

func (s *server) hookOutcome(outcome string) {
	if s.o.Recorder != nil {
		s.o.Recorder.HookEvent(outcome)
	}
}
