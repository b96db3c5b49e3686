package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// AccountsAPI configures the accounts API: accounts created, changed and
// deleted through HTTP by dirsync's operators or each customer's own
// administrator (a tenant token), stored in PostgreSQL
// (console.postgres_dsn) next to the accounts of this file.
type AccountsAPI struct {
	// AllowedNetworks are address ranges, in CIDR form, that directories of
	// accounts created through the API may be reached in although they are
	// loopback, link-local or private (refused by default, so the API
	// cannot be used to probe the network dirsync runs in). Example:
	// ["10.20.0.0/16"] for directories reached over a private link.
	AllowedNetworks []string `yaml:"allowed_networks"`
	// LDIFRoot, when set, lets the global administrator create accounts of
	// directory type ldif whose path is inside this folder (tenants never
	// may). Default: ldif accounts cannot be created through the API.
	LDIFRoot string `yaml:"ldif_root"`
}

func (a *AccountsAPI) applyDefaults(c *Config) {
	a.LDIFRoot = c.path(a.LDIFRoot)
}

func (a *AccountsAPI) validate(ps *problems) {
	for i, n := range a.AllowedNetworks {
		if _, err := netip.ParsePrefix(strings.TrimSpace(n)); err != nil {
			ps.add(fmt.Sprintf("accounts_api.allowed_networks[%d]", i), "%q is not a network in CIDR form; write for example 10.20.0.0/16", n)
		}
	}
	checkFile(ps, "accounts_api.ldif_root", a.LDIFRoot)
}
