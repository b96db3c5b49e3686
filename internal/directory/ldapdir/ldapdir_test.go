package ldapdir

import (
	"strings"
	"testing"
)

// TestNewErrorsNameTheOption: New's errors follow the package convention
// (no package prefix; the option at fault first, in its config spelling).
func TestNewErrorsNameTheOption(t *testing.T) {
	good := Options{Type: TypeLDAP, URLs: []string{"ldaps://dc1.example"}, BindDN: "cn=svc", BindPassword: "pw",
		UserBaseDN: "dc=example", GroupBaseDN: "dc=example"}
	for _, tc := range []struct {
		change func(o *Options)
		want   string
	}{
		{func(o *Options) { o.Type = "nis" }, `directory type "nis"`},
		{func(o *Options) { o.URLs = nil }, "urls: none given"},
		{func(o *Options) { o.URLs = []string{"http://dc1"} }, "urls: "},
		{func(o *Options) { o.StartTLS = true }, "urls: ldaps://dc1.example already uses TLS"},
		{func(o *Options) { o.URLs = []string{"ldap://dc1"} }, "urls: ldap://dc1 would send the bind password in clear"},
		{func(o *Options) { o.BindPassword = "" }, "bind_dn and the bind password are required"},
		{func(o *Options) { o.GroupBaseDN = "" }, "user_base_dn and group_base_dn"},
	} {
		o := good
		tc.change(&o)
		_, err := New(o)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error starting %q", err, tc.want)
		}
	}
	if _, err := New(good); err != nil {
		t.Fatalf("New(good): %v", err)
	}
}
