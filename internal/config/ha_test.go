package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dirsync/dirsync/internal/config"
)

const haBase = `
cache: {backend: redis}
accounts:
  - id: acme
    claimed_domains: [acme.example]
    directory: {type: ldif, ldif: {path: /dev/null}}
    bindings: [{group: "CN=Pro,DC=acme,DC=example", permission: pro}]
`

func TestHADefaultsAndOverride(t *testing.T) {
	cfg, err := parse([]byte(haBase), "/tmp", "ha.yaml", getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HA.LeasePeriod != config.DefaultLeasePeriod || cfg.HA.ReplicaID != "" {
		t.Errorf("defaults: %+v", cfg.HA)
	}
	cfg, err = parse([]byte(haBase+"ha: {lease_period: 3s, replica_id: dc1-a}\n"), "/tmp", "ha.yaml", getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HA.LeasePeriod != 3*time.Second || cfg.HA.ReplicaID != "dc1-a" {
		t.Errorf("override: %+v", cfg.HA)
	}
}

func TestHAValidation(t *testing.T) {
	for in, want := range map[string]string{
		"ha: {lease_period: 100ms}":   "ha.lease_period: 100ms is too short",
		"ha: {lease_period: 1h}":      "ha.lease_period: 1h0m0s is too long",
		"ha: {replica_id: \"a b\"}":   `ha.replica_id: "a b" may hold only`,
		"ha: {replica_id: \"x{y}\"}":  `ha.replica_id: "x{y}" may hold only`,
		"ha: {lease_perod: 3s}":       "lease_perod",
		"ha: {lease_period: fifteen}": "ha",
	} {
		_, err := parse([]byte(haBase+in+"\n"), "/tmp", "ha.yaml", getenv(nil))
		var cerr *config.Error
		if !errors.As(err, &cerr) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v; want one containing %q", in, err, want)
		}
	}
}
