package config

import "time"

// HA configures how several `dirsync run` replicas sharing one Redis cache
// divide the accounts between them (see docs/high-availability.md). It
// applies only to the redis cache backend.
type HA struct {
	// LeasePeriod is how long an account's lease lasts without renewal: a
	// replica that dies or stalls loses its accounts to another replica
	// about one lease period later. Renewal runs every third of it.
	// Default 15s; at least 1s.
	LeasePeriod time.Duration `yaml:"lease_period"`
	// ReplicaID names this replica in leases, logs and /v1/status. Default:
	// the host name and process id. A random suffix is always added, so two
	// processes never share an identity.
	ReplicaID string `yaml:"replica_id"`
}

// DefaultLeasePeriod is the default ha.lease_period.
const DefaultLeasePeriod = 15 * time.Second

// MinLeasePeriod is the shortest accepted ha.lease_period.
const MinLeasePeriod = time.Second

func (h *HA) applyDefaults() {
	if h.LeasePeriod == 0 {
		h.LeasePeriod = DefaultLeasePeriod
	}
}

func (h *HA) validate(ps *problems) {
	if h.LeasePeriod < MinLeasePeriod {
		ps.add("ha.lease_period", "%v is too short; use at least %v (default %v)", h.LeasePeriod, MinLeasePeriod, DefaultLeasePeriod)
	}
	if h.LeasePeriod > 10*time.Minute {
		ps.add("ha.lease_period", "%v is too long: a dead replica's accounts would go unsynced that long; use at most 10m (default %v)", h.LeasePeriod, DefaultLeasePeriod)
	}
	for _, r := range h.ReplicaID {
		if r <= ' ' || r == '|' || r == '#' || r == '{' || r == '}' || r > '~' {
			ps.add("ha.replica_id", "%q may hold only printable ASCII without spaces, braces, '|' or '#'", h.ReplicaID)
			break
		}
	}
}
