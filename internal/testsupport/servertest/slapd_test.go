package servertest

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/go-ldap/ldap/v3"
)

func TestSlapdLimitsAndTLS(t *testing.T) {
	var ldif strings.Builder
	for i := range 600 {
		fmt.Fprintf(&ldif, "dn: uid=u%d,ou=people,dc=example,dc=test\nobjectClass: inetOrgPerson\nuid: u%d\ncn: u%d\nsn: u\nmail: u%d@example.test\n\n", i, i, i, i)
	}
	s := StartSlapd(t, SlapdOptions{LDIF: ldif.String()})

	count := func(c *ldap.Conn, dn, pw string) (int, error) {
		if err := c.Bind(dn, pw); err != nil {
			return 0, err
		}
		res, err := c.SearchWithPaging(ldap.NewSearchRequest(s.PeopleDN, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
			0, 0, false, "(objectClass=inetOrgPerson)", []string{"uid"}, nil), 200)
		if res == nil {
			return 0, err
		}
		return len(res.Entries), err
	}
	plain, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if n, err := count(plain, s.ServiceDN, s.ServicePassword); err != nil || n != 600 {
		t.Fatalf("service account read %d entries, err %v; want 600", n, err)
	}
	n, err := count(plain, s.LimitedDN, s.LimitedPassword)
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		t.Fatalf("limited account read %d entries with err %v; want size limit exceeded", n, err)
	}

	tlsConn, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(s.TLS.ClientConfig()))
	if err != nil {
		t.Fatalf("ldaps: %v", err)
	}
	defer tlsConn.Close()
	if err := tlsConn.Bind(s.ServiceDN, s.ServicePassword); err != nil {
		t.Fatalf("ldaps bind: %v", err)
	}
	st, err := ldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := s.TLS.ClientConfig()
	cfg.ServerName = "127.0.0.1"
	if err := st.StartTLS(cfg); err != nil {
		t.Fatalf("starttls: %v", err)
	}

	s.Modify(t, "dn: uid=u1,ou=people,dc=example,dc=test\nchangetype: delete\n")
	if n, err := count(st, s.ServiceDN, s.ServicePassword); err != nil || n != 599 {
		t.Fatalf("after delete: %d entries, err %v; want 599", n, err)
	}
	var lerr *ldap.Error
	if err := st.Bind(s.ServiceDN, "wrong"); !errors.As(err, &lerr) || lerr.ResultCode != ldap.LDAPResultInvalidCredentials {
		t.Fatalf("wrong password: %v", err)
	}
}
