package ldif

import (
	"fmt"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
)

// Type is the directory type this package serves, configured by the ldif
// section.
const Type = "ldif"

// Section is the ldif section of an account's directory: an LDIF file
// (offline import, quick start).
type Section struct {
	// Path to the LDIF file; relative paths are resolved against the
	// directory of the config file.
	Path string `yaml:"path"`
	// DisabledAttribute and DisabledValue: as for LDAP.
	DisabledAttribute string `yaml:"disabled_attribute"`
	DisabledValue     string `yaml:"disabled_value"`
	// EmailAttributes: as for LDAP. Default [mail, userPrincipalName].
	EmailAttributes []string `yaml:"email_attributes"`
}

// Kind registers LDIF files: the ldif section, its defaults and
// validation, and the Source built from it.
func Kind() directory.Kind {
	return directory.Kind{
		Config: config.NewSourceKind(config.Section[Section]{
			Types:    []string{Type},
			Key:      "ldif",
			Defaults: applyDefaults,
			Validate: validate,
		}),
		Open: open,
	}
}

func applyDefaults(s *Section, resolve func(string) string) {
	s.Path = resolve(s.Path)
	if len(s.EmailAttributes) == 0 {
		s.EmailAttributes = ldapentry.DefaultEmailAttributes()
	}
}

func validate(s *Section, c *config.Check) {
	if s.Path == "" {
		c.Add("path", "required: the LDIF file to read")
	} else {
		c.File("path", s.Path)
	}
	if s.DisabledValue != "" && s.DisabledAttribute == "" {
		c.Add("disabled_value", "set but disabled_attribute is empty; name the attribute that holds it")
	}
}

func open(a *config.Account, _ func(string) string) (directory.Source, error) {
	s, ok := config.SectionOf[Section](a.Directory)
	if !ok {
		return nil, fmt.Errorf("directory.ldif: no ldif section for directory type %q", a.Directory.Type)
	}
	return NewSource(s.Path, ldapentry.Options{
		EmailAttributes:   s.EmailAttributes,
		DisabledAttribute: s.DisabledAttribute,
		DisabledValue:     s.DisabledValue,
	}, time.Now), nil
}
