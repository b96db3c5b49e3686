// Command devstack starts real directory and cache servers on loopback with
// the quick-start sample data, for trying dirsync's real pollers by hand:
// redis-server (with a password), OpenLDAP slapd (StartTLS, a read-only
// service account) and, with --samba, a Samba Active Directory DC. It writes
// a ready-to-use dirsync config per directory, validates it, prints it with
// commands to try, and stops every server cleanly on Ctrl-C.
//
// Run it through deployments/local/dev-stack from the repository root.
// Servers missing on the machine are installed with apt-get when running as
// root (Debian packages redis-server, slapd, ldap-utils; samba and friends
// for --samba).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/ldapentry"
	"github.com/dirsync/dirsync/internal/directory/ldif"
	"github.com/dirsync/dirsync/internal/directory/sources"
	"github.com/dirsync/dirsync/internal/testsupport/servertest"
)

// The sample's naming context; OpenLDAP serves it unchanged, the Samba DC
// (whose domain is fixed) under servertest.SambaBaseDN.
const sampleBaseDN = "DC=acme,DC=example"

// Credentials of the local servers. They guard loopback-only throwaway
// servers; dirsync reads them from files like any production secret.
const (
	redisPassword    = "devstack-redis"
	slapdRootDN      = "cn=admin," + sampleBaseDN
	slapdRootPW      = "devstack-root"
	slapdServiceDN   = "cn=dirsync,ou=services," + sampleBaseDN
	slapdServicePW   = "devstack-dirsync"
	readyLine        = "dev stack ready"
	defaultSampleRel = "deployments/local/directory.ldif"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "dev-stack:", err)
		os.Exit(1)
	}
}

type options struct {
	dir    string
	sample string
	samba  bool
}

// stack is the set of running servers; stop stops them all.
type stack struct {
	stops []func()
	procs map[string]*servertest.Process
}

func (s *stack) add(name string, p *servertest.Process) {
	if s.procs == nil {
		s.procs = map[string]*servertest.Process{}
	}
	s.procs[name] = p
	s.stops = append(s.stops, p.Stop)
}

// exited names a server that has exited on its own, or returns "".
func (s *stack) exited() string {
	for name, p := range s.procs {
		if p.Exited() {
			return name
		}
	}
	return ""
}

func (s *stack) stop() {
	for i := len(s.stops) - 1; i >= 0; i-- {
		s.stops[i]()
	}
	s.stops = nil
}

// run starts the stack, prints how to use it and blocks until ctx ends or a
// server dies; it stops every server before returning.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("dev-stack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.dir, "dir", "", "directory for server data, logs and the generated configs (default: a new temporary directory, removed on exit)")
	fs.StringVar(&o.sample, "ldif", defaultSampleRel, "the sample directory (an Active Directory LDIF export) to load")
	fs.BoolVar(&o.samba, "samba", false, "also provision a Samba AD DC (root only; takes 10-60 s)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.dir == "" {
		tmp, err := os.MkdirTemp("", "dirsync-dev-stack-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		o.dir = tmp
	}
	if err := os.MkdirAll(filepath.Join(o.dir, "secrets"), 0o700); err != nil {
		return err
	}
	sample, err := readSample(o.sample)
	if err != nil {
		return err
	}

	st := &stack{}
	defer st.stop()

	redisAddr, err := startRedis(st, o.dir)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	slapd, err := startSlapd(st, o.dir, sample)
	if err != nil {
		return fmt.Errorf("slapd: %w", err)
	}
	configs := []generated{{name: "openldap", text: slapd.config(redisAddr)}}
	if o.samba {
		fmt.Fprintln(stderr, "provisioning the Samba AD DC (10-60 s)…")
		dc, err := startSamba(st, sample)
		if err != nil {
			return fmt.Errorf("samba: %w", err)
		}
		configs = append(configs, generated{name: "samba", text: sambaConfig(dc, redisAddr)})
	}
	for i := range configs {
		if err := configs[i].write(o.dir); err != nil {
			return err
		}
	}
	printUsage(stdout, o.dir, redisAddr, slapd, configs)
	fmt.Fprintln(stdout, readyLine+"; press Ctrl-C to stop it")

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stdout, "stopping the dev stack…")
			return nil
		case <-tick.C:
			if name := st.exited(); name != "" {
				return fmt.Errorf("%s exited; see its log under %s", name, o.dir)
			}
		}
	}
}

// entry is a sample LDIF entry, attribute names lower-cased.
type entry = ldapentry.Entry

// sampleData is the sample directory split by kind.
type sampleData struct {
	users, groups, containers []*entry
}

func readSample(path string) (*sampleData, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("sample directory: %w (run from the repository root or pass --ldif)", err)
	}
	defer f.Close()
	s := &sampleData{}
	err = ldif.Parse(f, func(e *entry) {
		classes := map[string]bool{}
		for _, c := range e.Attrs["objectclass"] {
			classes[strings.ToLower(c)] = true
		}
		switch {
		case classes["user"]:
			s.users = append(s.users, e)
		case classes["group"]:
			s.groups = append(s.groups, e)
		case classes["organizationalunit"]:
			s.containers = append(s.containers, e)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("sample directory %s: %w", path, err)
	}
	if len(s.users) == 0 || len(s.groups) == 0 {
		return nil, fmt.Errorf("sample directory %s has no users or no groups", path)
	}
	return s, nil
}

func disabled(u *entry) bool {
	uac, err := strconv.ParseInt(u.First("useraccountcontrol"), 10, 64)
	return err == nil && uac&2 != 0
}

// ---- redis-server ----

func startRedis(st *stack, dir string) (string, error) {
	bin, err := servertest.LookBinary("redis-server")
	if err != nil {
		return "", missing("redis-server", "redis-server")
	}
	rdir := filepath.Join(dir, "redis")
	if err := os.MkdirAll(rdir, 0o700); err != nil {
		return "", err
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	conf := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsave \"\"\nappendonly no\nrequirepass %s\n", port, rdir, redisPassword)
	if err := os.WriteFile(filepath.Join(rdir, "redis.conf"), []byte(conf), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "redis-password"), []byte(redisPassword+"\n"), 0o600); err != nil {
		return "", err
	}
	p, err := servertest.Start(rdir, bin, filepath.Join(rdir, "redis.conf"))
	if err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	st.add("redis-server", p)
	if err := servertest.WaitTCP(addr, 15*time.Second); err != nil {
		return "", fmt.Errorf("%w; log: %s", err, p.LogTail())
	}
	return addr, nil
}

// ---- OpenLDAP slapd ----

type slapd struct {
	url, ldapsURL string
	caFile        string
	dir           string
}

func startSlapd(st *stack, dir string, s *sampleData) (*slapd, error) {
	bin, err := servertest.LookBinary("slapd")
	if err != nil {
		return nil, missing("slapd", "slapd ldap-utils")
	}
	slapadd, err := servertest.LookBinary("slapadd")
	if err != nil {
		return nil, missing("slapadd", "slapd")
	}
	sdir := filepath.Join(dir, "slapd")
	if err := os.MkdirAll(filepath.Join(sdir, "db"), 0o700); err != nil {
		return nil, err
	}
	tlsFiles, err := servertest.NewTLSFiles(sdir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return nil, err
	}
	ldapPort, err := freePort()
	if err != nil {
		return nil, err
	}
	ldapsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	sl := &slapd{
		url:      fmt.Sprintf("ldap://127.0.0.1:%d", ldapPort),
		ldapsURL: fmt.Sprintf("ldaps://127.0.0.1:%d", ldapsPort),
		caFile:   tlsFiles.CAFile,
		dir:      sdir,
	}
	conf := filepath.Join(sdir, "slapd.conf")
	if err := os.WriteFile(conf, []byte(slapdConf(sdir, tlsFiles)), 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(sdir, "data.ldif")
	if err := os.WriteFile(data, []byte(openLDAPEntries(s)), 0o600); err != nil {
		return nil, err
	}
	if out, err := runCommand(slapadd, "-q", "-f", conf, "-l", data); err != nil {
		return nil, fmt.Errorf("slapadd: %w: %s", err, out)
	}
	if err := os.WriteFile(filepath.Join(dir, "secrets", "ldap-bind-password"), []byte(slapdServicePW+"\n"), 0o600); err != nil {
		return nil, err
	}
	p, err := servertest.Start(sdir, bin, "-d", "0", "-h", sl.url+"/ "+sl.ldapsURL+"/", "-f", conf)
	if err != nil {
		return nil, err
	}
	st.add("slapd", p)
	if err := servertest.WaitTCP(strings.TrimPrefix(sl.url, "ldap://"), 15*time.Second); err != nil {
		return nil, fmt.Errorf("%w; log: %s", err, p.LogTail())
	}
	return sl, nil
}

func slapdConf(dir string, t *servertest.TLSFiles) string {
	var b strings.Builder
	for _, schema := range []string{"core", "cosine", "nis", "inetorgperson"} {
		fmt.Fprintf(&b, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	fmt.Fprintf(&b, `modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
argsfile %[1]s/slapd.args
TLSCACertificateFile %[2]s
TLSCertificateFile %[3]s
TLSCertificateKeyFile %[4]s

database mdb
maxsize 104857600
suffix "%[5]s"
rootdn "%[6]s"
rootpw %[7]s
directory %[1]s/db
index objectClass eq
index entryUUID eq
limits dn.exact="%[8]s" size=unlimited time=unlimited
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
`, dir, t.CAFile, t.CertFile, t.KeyFile, sampleBaseDN, slapdRootDN, slapdRootPW, slapdServiceDN)
	return b.String()
}

// openLDAPEntries converts the AD sample to OpenLDAP schema, keeping every
// DN: users become inetOrgPerson (a disabled account gets
// employeeType: disabled, the config's disabled marker), groups become
// groupOfNames. AD's accountExpires and userPrincipalName have no OpenLDAP
// equivalent and are dropped.
func openLDAPEntries(s *sampleData) string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\ndc: acme\no: Acme\n\n", sampleBaseDN)
	fmt.Fprintf(&b, "dn: ou=services,%s\nobjectClass: organizationalUnit\nou: services\n\n", sampleBaseDN)
	fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: dirsync\nuserPassword: %s\n\n", slapdServiceDN, slapdServicePW)
	for _, c := range s.containers {
		fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalUnit\nou: %s\n\n", c.DN, c.First("ou"))
	}
	for _, u := range s.users {
		cn := u.First("cn")
		fmt.Fprintf(&b, "dn: %s\nobjectClass: inetOrgPerson\ncn: %s\nsn: %s\n", u.DN, cn, lastWord(cn))
		if uid := u.First("samaccountname"); uid != "" {
			fmt.Fprintf(&b, "uid: %s\n", uid)
		}
		if mail := u.First("mail"); mail != "" {
			fmt.Fprintf(&b, "mail: %s\n", mail)
		}
		if disabled(u) {
			b.WriteString("employeeType: disabled\n")
		}
		b.WriteString("\n")
	}
	for _, g := range s.groups {
		fmt.Fprintf(&b, "dn: %s\nobjectClass: groupOfNames\ncn: %s\n", g.DN, g.First("cn"))
		for _, m := range g.Attrs["member"] {
			fmt.Fprintf(&b, "member: %s\n", m)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func lastWord(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return s
	}
	return f[len(f)-1]
}

func (s *slapd) config(redisAddr string) string {
	return fmt.Sprintf(`# dirsync against the dev stack's OpenLDAP (generated by dev-stack).
cache:
  backend: redis
  redis:
    addrs: ["%[1]s"]
    password_file: secrets/redis-password
    key_prefix: devstack-openldap
api:
  listen: 127.0.0.1:8080
schedule:
  full: "@every 10m"
  incremental: "@every 5s"
log:
  format: console
accounts:
  - id: acme
    name: Acme Corp (OpenLDAP)
    claimed_domains: [acme.example]
    directory:
      type: ldap
      ldap:
        urls: ["%[2]s"]
        start_tls: true
        ca_file: %[3]s
        bind_dn: "%[4]s"
        bind_password_file: secrets/ldap-bind-password
        base_dn: "%[5]s"
        disabled_attribute: employeeType
        disabled_value: disabled
    bindings:
      - {group: "CN=Chime Pro,OU=Groups,%[5]s", permission: pro}
      - {group: "CN=Chime Basic,OU=Groups,%[5]s", permission: basic}
`, redisAddr, s.url, s.caFile, slapdServiceDN, sampleBaseDN)
}

// ---- Samba AD DC ----

func sambaDN(dn string) string {
	if i := len(dn) - len(sampleBaseDN); i >= 0 && strings.EqualFold(dn[i:], sampleBaseDN) {
		return dn[:i] + servertest.SambaBaseDN
	}
	return dn
}

func startSamba(st *stack, s *sampleData) (*servertest.Samba, error) {
	var entries []string
	for _, c := range s.containers {
		entries = append(entries, fmt.Sprintf("dn: %s\nobjectClass: organizationalUnit\nou: %s\n", sambaDN(c.DN), c.First("ou")))
	}
	for _, u := range s.users {
		uac, err := strconv.Atoi(u.First("useraccountcontrol"))
		if err != nil {
			uac = 512
		}
		// PASSWD_NOTREQD: the sample users have no password.
		e := fmt.Sprintf("dn: %s\nobjectClass: user\nsAMAccountName: %s\nuserAccountControl: %d\n", sambaDN(u.DN), u.First("samaccountname"), uac|0x20)
		for _, a := range []string{"mail", "userPrincipalName", "accountExpires"} {
			if v := u.First(strings.ToLower(a)); v != "" {
				e += a + ": " + v + "\n"
			}
		}
		entries = append(entries, e)
	}
	for _, g := range s.groups {
		entries = append(entries, fmt.Sprintf("dn: %s\nobjectClass: group\nsAMAccountName: %s\n", sambaDN(g.DN), g.First("cn")))
	}
	// Members are linked once every object exists (the sample has forward
	// references and a cycle).
	var links strings.Builder
	for _, g := range s.groups {
		if len(g.Attrs["member"]) == 0 {
			continue
		}
		fmt.Fprintf(&links, "dn: %s\nchangetype: modify\nadd: member\n", sambaDN(g.DN))
		for _, m := range g.Attrs["member"] {
			fmt.Fprintf(&links, "member: %s\n", sambaDN(m))
		}
		links.WriteString("-\n\n")
	}
	dc, err := servertest.ProvisionSamba(servertest.SambaOptions{
		BulkLDIF: servertest.LDIFBatches(entries, 500),
		Setup:    func(dc *servertest.Samba) error { return dc.Modify(links.String()) },
	})
	if errors.Is(err, servertest.ErrUnavailable) {
		return nil, fmt.Errorf("%w (install: apt-get install samba samba-dsdb-modules samba-vfs-modules samba-ad-provision python3-samba ldb-tools ldap-utils)", err)
	}
	if err != nil {
		return nil, err
	}
	st.stops = append(st.stops, dc.Close)
	return dc, nil
}

func sambaConfig(dc *servertest.Samba, redisAddr string) string {
	return fmt.Sprintf(`# dirsync against the dev stack's Samba AD DC (generated by dev-stack).
# It binds as the domain Administrator: fine for a throwaway local DC; in
# production use a dedicated read-only account (docs/active-directory.md).
cache:
  backend: redis
  redis:
    addrs: ["%[1]s"]
    password_file: secrets/redis-password
    key_prefix: devstack-samba
api:
  listen: 127.0.0.1:8081
schedule:
  full: "@every 10m"
  incremental: "@every 5s"
log:
  format: console
accounts:
  - id: acme
    name: Acme Corp (Samba AD)
    claimed_domains: [acme.example]
    directory:
      type: active_directory
      ldap:
        urls: ["%[2]s"]
        ca_file: %[3]s
        bind_dn: "%[4]s"
        bind_password_file: secrets/samba-admin-password
        base_dn: "%[5]s"
    bindings:
      - {group: "CN=Chime Pro,OU=Groups,%[5]s", permission: pro}
      - {group: "CN=Chime Basic,OU=Groups,%[5]s", permission: basic}
`, redisAddr, dc.LDAPSURL, dc.TLS.CAFile, servertest.SambaAdminDN, servertest.SambaBaseDN)
}

// ---- configs and output ----

type generated struct {
	name, text, path string
}

// write saves the config (with its secrets next to it) and validates it
// exactly as dirsync will.
func (g *generated) write(dir string) error {
	g.path = filepath.Join(dir, g.name+".yaml")
	if g.name == "samba" {
		if err := os.WriteFile(filepath.Join(dir, "secrets", "samba-admin-password"), []byte(servertest.SambaAdminPassword+"\n"), 0o600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(g.path, []byte(g.text), 0o600); err != nil {
		return err
	}
	if _, err := config.Load(g.path, sources.Config(), os.Getenv); err != nil {
		return fmt.Errorf("generated config is invalid (a dev-stack bug): %w", err)
	}
	return nil
}

func printUsage(w io.Writer, dir, redisAddr string, sl *slapd, configs []generated) {
	fmt.Fprintf(w, "dirsync dev stack in %s\n\n", dir)
	fmt.Fprintf(w, "  redis-server  %s (password in %s)\n", redisAddr, filepath.Join(dir, "secrets", "redis-password"))
	fmt.Fprintf(w, "  slapd         %s (StartTLS) and %s; CA %s\n", sl.url, sl.ldapsURL, sl.caFile)
	fmt.Fprintf(w, "                admin: %s / %s (write access, for ldapmodify)\n", slapdRootDN, slapdRootPW)
	for _, c := range configs {
		fmt.Fprintf(w, "\n---- %s (%s) ----\n%s", c.path, c.name, c.text)
	}
	first := configs[0].path
	fmt.Fprintf(w, `
Try it (from the repository root, after make build):
  bin/dirsync sync  --config %[1]s
  bin/dirsync check --config %[1]s alice@acme.example --explain
  bin/dirsync run   --config %[1]s
Disable dave in OpenLDAP and watch the next incremental pass deny him:
  printf 'dn: CN=Dave Disabled,OU=People,%[2]s\nchangetype: modify\ndelete: employeeType\n' \
    | ldapmodify -x -H %[3]s -D '%[4]s' -w %[5]s     # re-enables him; add it back to disable
Notes: the OpenLDAP copy of the sample has no accountExpires (frank is active
there) and no userPrincipalName (ivan has no email and is skipped).

`, first, sampleBaseDN, sl.url, slapdRootDN, slapdRootPW)
	if len(configs) > 1 {
		fmt.Fprintf(w, "The Samba AD config (%s) serves its API on 127.0.0.1:8081, so both daemons can run at once.\n\n", configs[1].path)
	}
}

// ---- helpers ----

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func missing(binary, packages string) error {
	return fmt.Errorf("%s is not installed; install it with: sudo apt-get install -y %s (or run deployments/scripts/install-test-deps as root)", binary, packages)
}

func runCommand(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
