package servertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SlapdOptions configures StartSlapd.
type SlapdOptions struct {
	// Suffix is the database suffix. Default dc=example,dc=test.
	Suffix string
	// LDIF is loaded with slapadd before the server starts, after the
	// harness's own entries (the suffix, ou=people, ou=groups, ou=services
	// and the two service accounts). Content records only.
	LDIF string
	// LDIFFile is a (large) LDIF file loaded with slapadd -q after LDIF.
	LDIFFile string
	// SizeLimit is the global sizelimit, applied to every bind DN except
	// the root DN and ServiceDN. Default 500 (slapd's own default).
	SizeLimit int
	// MaxSize is the mdb map size in bytes. Default 1 GiB.
	MaxSize int64
}

// Slapd is a private OpenLDAP server (mdb, slapd.conf, the refint overlay
// keeping member/uniqueMember in step with renames and deletes) on random
// loopback ports: plain LDAP (with StartTLS) and LDAPS, both with a certificate from
// TLS whose SAN holds 127.0.0.1 and localhost.
type Slapd struct {
	URL      string // ldap://127.0.0.1:port
	LDAPSURL string // ldaps://127.0.0.1:port
	TLS      *TLSFiles
	Suffix   string
	PeopleDN string // ou=people,<suffix>
	GroupsDN string // ou=groups,<suffix>
	// RootDN/RootPassword: the database root (no limits, write access).
	RootDN, RootPassword string
	// ServiceDN/ServicePassword: a read-only account with size and time
	// limits lifted (what dirsync should be configured with).
	ServiceDN, ServicePassword string
	// LimitedDN/LimitedPassword: a read-only account under the default
	// size limit, to prove truncated reads are caught.
	LimitedDN, LimitedPassword string
	Dir                        string

	bin                 string
	conf                string
	proc                *Process
	ldapPort, ldapsPort int
}

// StartSlapd creates, loads and starts a slapd; it is stopped when t ends.
func StartSlapd(t testing.TB, opts SlapdOptions) *Slapd {
	t.Helper()
	bin := Require(t, "slapd", "slapd", "ldap-utils")
	slapadd := Require(t, "slapadd", "slapd")
	Require(t, "ldapmodify", "ldap-utils")
	if opts.Suffix == "" {
		opts.Suffix = "dc=example,dc=test"
	}
	if opts.SizeLimit == 0 {
		opts.SizeLimit = 500
	}
	if opts.MaxSize == 0 {
		opts.MaxSize = 1 << 30
	}
	s := &Slapd{
		Dir: t.TempDir(), Suffix: opts.Suffix, bin: bin,
		PeopleDN: "ou=people," + opts.Suffix, GroupsDN: "ou=groups," + opts.Suffix,
		RootDN: "cn=admin," + opts.Suffix, RootPassword: "root-secret",
		ServiceDN: "cn=syncd,ou=services," + opts.Suffix, ServicePassword: "syncd-secret",
		LimitedDN: "cn=limited,ou=services," + opts.Suffix, LimitedPassword: "limited-secret",
		ldapPort: FreePort(t), ldapsPort: FreePort(t),
	}
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", s.ldapPort)
	s.LDAPSURL = fmt.Sprintf("ldaps://127.0.0.1:%d", s.ldapsPort)
	var err error
	if s.TLS, err = NewTLSFiles(s.Dir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		t.Fatalf("slapd tls: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	s.conf = filepath.Join(s.Dir, "slapd.conf")
	if err := os.WriteFile(s.conf, []byte(s.config(opts)), 0o600); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(s.Dir, "base.ldif")
	if err := os.WriteFile(base, []byte(s.baseLDIF()+"\n"+opts.LDIF), 0o600); err != nil {
		t.Fatal(err)
	}
	files := []string{base}
	if opts.LDIFFile != "" {
		files = append(files, opts.LDIFFile)
	}
	for _, f := range files {
		if out, err := exec.Command(slapadd, "-q", "-f", s.conf, "-l", f).CombinedOutput(); err != nil {
			t.Fatalf("slapadd %s: %v: %s", f, err, tail(out))
		}
	}
	if err := s.start(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	t.Cleanup(func() { s.proc.Stop() }) // the current process, also after Restart
	return s
}

func (s *Slapd) config(opts SlapdOptions) string {
	var b strings.Builder
	for _, schema := range []string{"core", "cosine", "nis", "inetorgperson"} {
		fmt.Fprintf(&b, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	fmt.Fprintf(&b, `modulepath /usr/lib/ldap
moduleload back_mdb
moduleload refint
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
TLSCACertificateFile %[2]s
TLSCertificateFile %[3]s
TLSCertificateKeyFile %[4]s
sizelimit %[5]d
timelimit 3600

database mdb
maxsize %[6]d
suffix "%[7]s"
rootdn "%[8]s"
rootpw %[9]s
directory %[1]s/db
index objectClass eq
index entryUUID eq
index uid eq
index modifyTimestamp eq
limits dn.exact="%[10]s" size=unlimited time=unlimited
overlay refint
refint_attributes member uniqueMember
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
`, s.Dir, s.TLS.CAFile, s.TLS.CertFile, s.TLS.KeyFile, opts.SizeLimit, opts.MaxSize,
		s.Suffix, s.RootDN, s.RootPassword, s.ServiceDN)
	return b.String()
}

func (s *Slapd) baseLDIF() string {
	dc, _, _ := strings.Cut(strings.TrimPrefix(s.Suffix, "dc="), ",")
	return fmt.Sprintf(`dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: %[2]s
o: %[2]s

dn: %[3]s
objectClass: organizationalUnit
ou: people

dn: %[4]s
objectClass: organizationalUnit
ou: groups

dn: ou=services,%[1]s
objectClass: organizationalUnit
ou: services

dn: %[5]s
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: syncd
userPassword: %[6]s

dn: %[7]s
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: limited
userPassword: %[8]s
`, s.Suffix, dc, s.PeopleDN, s.GroupsDN, s.ServiceDN, s.ServicePassword, s.LimitedDN, s.LimitedPassword)
}

func (s *Slapd) start() error {
	urls := fmt.Sprintf("ldap://127.0.0.1:%d/ ldaps://127.0.0.1:%d/", s.ldapPort, s.ldapsPort)
	p, err := Start(s.Dir, s.bin, "-d", "0", "-h", urls, "-f", s.conf)
	if err != nil {
		return err
	}
	s.proc = p
	if err := WaitTCP(fmt.Sprintf("127.0.0.1:%d", s.ldapPort), 15*time.Second); err != nil {
		p.Kill()
		return fmt.Errorf("%w; log: %s", err, p.LogTail())
	}
	return nil
}

// Kill stops the server abruptly (as a crash would).
func (s *Slapd) Kill() { s.proc.Kill() }

// Restart starts a killed or stopped server again on the same ports with
// the same data.
func (s *Slapd) Restart(t testing.TB) {
	t.Helper()
	s.proc.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("slapd restart: %v", err)
	}
}

// Add adds content records (LDIF without changetype) as the root DN with
// ldapadd.
func (s *Slapd) Add(t testing.TB, ldif string) {
	t.Helper()
	s.ldapmodify(t, ldif, "-a")
}

// Modify applies change records (changetype: modify/delete/modrdn/add) as
// the root DN with ldapmodify.
func (s *Slapd) Modify(t testing.TB, ldif string) {
	t.Helper()
	s.ldapmodify(t, ldif)
}

func (s *Slapd) ldapmodify(t testing.TB, ldif string, extra ...string) {
	t.Helper()
	bin, err := LookBinary("ldapmodify")
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"-x", "-H", s.URL, "-D", s.RootDN, "-w", s.RootPassword}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Stdin = strings.NewReader(ldif)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ldapmodify: %v: %s", err, tail(out))
	}
}
