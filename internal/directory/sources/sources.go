// Package sources is the table of the directory source kinds this build
// includes: one line per kind. The daemon's wiring (cmd/dirsync) passes
// the table to config loading and builds each account's source through
// it; tools that validate configs (docs and deployment tests, the dev
// stack) pass the same table. There is no registry: a kind exists for a
// caller because the caller passes it.
//
// Adding a kind is a new package under internal/directory that exports a
// Kind() directory.Kind (its config section with defaults and validation,
// its constructor, its Stats), and one line in Kinds.
package sources

import (
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapdir"
	"github.com/dirsync/dirsync/internal/directory/ldif"
	"github.com/dirsync/dirsync/internal/directory/okta"
	"github.com/dirsync/dirsync/internal/directory/scim"
)

// Kinds returns the source kinds of the build, in the order their
// directory types are listed in messages.
func Kinds() []directory.Kind {
	return []directory.Kind{
		ldapdir.Kind(), // active_directory, ldap
		okta.Kind(),
		ldif.Kind(),
		scim.Kind(),
	}
}

// Config returns the config side of Kinds, for config.Load and
// config.Parse.
func Config() []config.SourceKind { return directory.ConfigKinds(Kinds()) }
