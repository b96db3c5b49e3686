package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// oktaVerify answers Okta's one-time event hook verification: it echoes
// the x-okta-verification-challenge header as {"verification": …}. Okta
// sends the hook's configured authorization header with it too (the Mux
// admitted the request only with a known hook secret).
func (s *server) oktaVerify(r *http.Request) (any, *apimux.Error) {
	challenge := r.Header.Get("X-Okta-Verification-Challenge")
	if challenge == "" {
		s.hookOutcome("bad_request")
		return nil, apimux.Errorf(http.StatusBadRequest, "missing x-okta-verification-challenge header")
	}
	s.hookOutcome("verified")
	return map[string]string{"verification": challenge}, nil
}

// oktaEvent receives event deliveries. Events are at-least-once and
// unordered, so they are only triggers: each delivery starts an immediate
// incremental pass of the accounts the secret belongs to, which re-reads
// the directory; the payload is parsed only to reject garbage.
func (s *server) oktaEvent(r *http.Request) (any, *apimux.Error) {
	accounts := apimux.PrincipalOf(r.Context()).Accounts
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
		return nil, apimux.Errorf(http.StatusBadRequest, "body is not an Okta event hook JSON document")
	}
	queued := 0
	for _, a := range accounts {
		if s.o.Trigger != nil && s.o.Trigger(a) {
			queued++
		}
	}
	s.hookOutcome("triggered")
	// Okta wants a quick 200 (it times out after 3 s and retries once).
	return map[string]any{"accounts": accounts, "queued": queued, "events": len(body.Data.Events)}, nil
}

// hookRefused counts a hook request without a known secret.
func (s *server) hookRefused() { s.hookOutcome("unauthorized") }

func (s *server) hookOutcome(outcome string) {
	if s.o.Recorder != nil {
		s.o.Recorder.HookEvent(outcome)
	}
}
