package servertest

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Samba domain constants: every DC the harness provisions is the same
// single-domain forest.
const (
	SambaRealm         = "EXAMPLE.TEST"
	SambaDomain        = "EXAMPLE"
	SambaBaseDN        = "DC=example,DC=test"
	SambaAdminDN       = "CN=Administrator,CN=Users," + SambaBaseDN
	SambaAdminUPN      = "Administrator@example.test"
	SambaAdminPassword = "Passw0rd!Admin"
)

// ErrUnavailable marks a server that cannot run on this machine (binary
// missing and not installable); callers skip or fail with Unavailable.
var ErrUnavailable = errors.New("integration server unavailable")

// SambaOptions configures ProvisionSamba.
type SambaOptions struct {
	// BulkLDIF is loaded into sam.ldb with ldbadd before the DC starts, in
	// one transaction per batch (entries separated by blank lines; see
	// LDIFBatches). It may use only plain content records.
	BulkLDIF []string
	// Setup runs once the DC answers, for changes that need a running
	// server (links to objects created later, RIDs assigned at creation).
	Setup func(*Samba) error
}

// Samba is a running Samba AD DC bound to one private 127.x address (its
// ports are fixed: 389, 636). It serves plain LDAP with simple binds
// (ldap server require strong auth = no), LDAPS and StartTLS with a
// certificate from TLS, whose SAN holds the IP, dc1.example.test and
// localhost.
type Samba struct {
	IP       string
	URL      string // ldap://IP:389
	LDAPSURL string // ldaps://IP:636
	Dir      string
	TLS      *TLSFiles
	// ProvisionTime is how long provisioning, loading and start-up took.
	ProvisionTime time.Duration

	proc    *Process
	ipAdded bool
}

// ProvisionSamba provisions a new domain into a fresh temporary directory,
// loads opts.BulkLDIF and starts the DC. The caller must call Close. An
// error wrapping ErrUnavailable means the machine cannot run Samba.
func ProvisionSamba(opts SambaOptions) (_ *Samba, err error) {
	start := time.Now()
	bins, err := ensureBinaries(map[string]string{
		"samba": "samba", "samba-tool": "samba", "ldbadd": "ldb-tools", "ldapmodify": "ldap-utils",
		"unshare": "util-linux", "ip": "iproute2",
	}, "samba", "samba-dsdb-modules", "samba-vfs-modules", "samba-ad-provision", "python3-samba", "ldb-tools", "ldap-utils")
	if err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: a Samba DC needs root (it binds port 389 on a private loopback address)", ErrUnavailable)
	}
	dir, err := os.MkdirTemp("", "dirsync-samba-")
	if err != nil {
		return nil, err
	}
	s := &Samba{Dir: dir}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.addAddress(bins["ip"]); err != nil {
		return nil, err
	}
	s.URL = "ldap://" + s.IP + ":389"
	s.LDAPSURL = "ldaps://" + s.IP + ":636"
	for _, d := range []string{"etc", "private", "lock", "state", "cache", "run", "log", "tls", "state/sysvol/example.test/scripts", "ldif"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	s.TLS, err = NewTLSFiles(filepath.Join(dir, "tls"), []string{"dc1.example.test", "example.test", "localhost"}, []net.IP{net.ParseIP(s.IP)})
	if err != nil {
		return nil, fmt.Errorf("samba tls: %w", err)
	}
	conf := filepath.Join(dir, "etc", "smb.conf")
	if err := os.WriteFile(conf, []byte(s.smbConf()), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		return nil, err
	}
	if out, err := s.isolated(bins["unshare"], bins["samba-tool"], "domain", "provision", "-s", conf,
		"--targetdir="+dir, "--realm="+SambaRealm, "--domain="+SambaDomain, "--host-name=dc1",
		"--host-ip="+s.IP, "--server-role=dc", "--dns-backend=NONE", "--adminpass="+SambaAdminPassword).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("samba-tool domain provision: %w: %s", err, tail(out))
	}
	for i, batch := range opts.BulkLDIF {
		path := filepath.Join(dir, "ldif", fmt.Sprintf("bulk-%03d.ldif", i))
		if err := os.WriteFile(path, []byte(batch), 0o600); err != nil {
			return nil, err
		}
		if out, err := s.isolated(bins["unshare"], bins["ldbadd"], "--nosync", "--configfile="+conf,
			"-H", filepath.Join(dir, "private", "sam.ldb"), path).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ldbadd batch %d: %w: %s", i, err, tail(out))
		}
	}
	script := fmt.Sprintf("mount --bind %s /etc/resolv.conf && exec %s -F --no-process-group -s %s",
		filepath.Join(dir, "resolv.conf"), bins["samba"], conf)
	s.proc, err = Start(dir, bins["unshare"], "-m", "sh", "-c", script)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(bins["ldapmodify"], 60*time.Second); err != nil {
		return nil, err
	}
	if opts.Setup != nil {
		if err := opts.Setup(s); err != nil {
			return nil, fmt.Errorf("samba setup: %w", err)
		}
	}
	s.ProvisionTime = time.Since(start)
	return s, nil
}

// isolated runs a Samba tool in a private mount namespace whose resolv.conf
// points at 127.0.0.1, so that nothing it does can reach real DNS.
func (s *Samba) isolated(unshare, bin string, args ...string) *exec.Cmd {
	script := fmt.Sprintf("mount --bind %s/resolv.conf /etc/resolv.conf && exec \"$@\"", s.Dir)
	cmd := exec.Command(unshare, append([]string{"-m", "sh", "-c", script, "sh", bin}, args...)...)
	cmd.Dir = s.Dir
	return cmd
}

func (s *Samba) smbConf() string {
	d := s.Dir
	return fmt.Sprintf(`[global]
	netbios name = DC1
	realm = %s
	workgroup = %s
	server role = active directory domain controller
	interfaces = %s
	bind interfaces only = yes
	disable netbios = yes
	server services = ldap
	private dir = %[4]s/private
	lock directory = %[4]s/lock
	state directory = %[4]s/state
	cache directory = %[4]s/cache
	pid directory = %[4]s/run
	ncalrpc dir = %[4]s/run/ncalrpc
	winbindd socket directory = %[4]s/run/winbindd
	log file = %[4]s/log/samba.log
	ldb:nosync = true
	ldap server require strong auth = no
	tls enabled = yes
	tls keyfile = %[5]s
	tls certfile = %[6]s
	tls cafile = %[7]s

[sysvol]
	path = %[4]s/state/sysvol
	read only = no

[netlogon]
	path = %[4]s/state/sysvol/example.test/scripts
	read only = no
`, SambaRealm, SambaDomain, s.IP, d, s.TLS.KeyFile, s.TLS.CertFile, s.TLS.CAFile)
}

// addAddress picks a random 127.x.y.1 address whose port 389 is free and
// adds it to lo (Samba listens only on addresses an interface holds).
func (s *Samba) addAddress(ipBin string) error {
	var b [2]byte
	for range 20 {
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		ip := fmt.Sprintf("127.%d.%d.1", 100+int(b[0])%100, 1+int(b[1])%250)
		if c, err := net.DialTimeout("tcp", ip+":389", 100*time.Millisecond); err == nil {
			c.Close()
			continue
		}
		out, err := exec.Command(ipBin, "addr", "add", ip+"/32", "dev", "lo").CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "File exists") {
				continue // another test binary holds it
			}
			return fmt.Errorf("ip addr add %s: %w: %s", ip, err, tail(out))
		}
		s.IP, s.ipAdded = ip, true
		return nil
	}
	return errors.New("no free 127.x address for samba")
}

func (s *Samba) waitReady(ldapmodify string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	search := filepath.Join(filepath.Dir(ldapmodify), "ldapsearch")
	for {
		if s.proc.Exited() {
			return fmt.Errorf("%w; log: %s", ErrExited, s.logTail())
		}
		cmd := exec.Command(search, "-x", "-H", s.URL, "-D", SambaAdminUPN, "-w", SambaAdminPassword,
			"-b", SambaBaseDN, "-s", "base", "-l", "5", "dn")
		if err := cmd.Run(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("samba not answering LDAP on %s after %v; log: %s", s.URL, timeout, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (s *Samba) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "log", "samba.log"))
	out := tail(b)
	if s.proc != nil {
		out += "\n" + s.proc.LogTail()
	}
	return out
}

// Close stops the DC, removes its address from lo and deletes its
// directory.
func (s *Samba) Close() {
	if s.proc != nil {
		s.proc.Stop()
	}
	if s.ipAdded {
		if ipBin, err := LookBinary("ip"); err == nil {
			_ = exec.Command(ipBin, "addr", "del", s.IP+"/32", "dev", "lo").Run()
		}
		s.ipAdded = false
	}
	if s.Dir != "" {
		_ = os.RemoveAll(s.Dir)
	}
}

// Modify applies LDIF change records (changetype: add/modify/delete/modrdn)
// over LDAP as Administrator, in order, stopping at the first failure.
func (s *Samba) Modify(ldif string) error {
	bin, err := LookBinary("ldapmodify")
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-x", "-H", s.URL, "-D", SambaAdminUPN, "-w", SambaAdminPassword)
	cmd.Stdin = strings.NewReader(ldif)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("ldapmodify: %w: %s", err, tail(out))
	}
	return nil
}

// AddACE adds one access control entry, in SDDL form (for example
// "(OD;;RP;<attribute schemaIDGUID>;;<trustee SID>)" to deny reading an
// attribute), to the security descriptor of objectDN, with samba-tool
// dsacl on the DC's own database.
func (s *Samba) AddACE(objectDN, ace string) error {
	unshare, err := LookBinary("unshare")
	if err != nil {
		return err
	}
	tool, err := LookBinary("samba-tool")
	if err != nil {
		return err
	}
	out, err := s.isolated(unshare, tool, "dsacl", "set", "--configfile="+filepath.Join(s.Dir, "etc", "smb.conf"),
		"-H", filepath.Join(s.Dir, "private", "sam.ldb"), "--objectdn="+objectDN, "--sddl="+ace).CombinedOutput()
	if err != nil {
		return fmt.Errorf("samba-tool dsacl set: %w: %s", err, tail(out))
	}
	return nil
}

// SetUserAccountControl replaces a user's userAccountControl, e.g. 514
// (NORMAL_ACCOUNT|ACCOUNTDISABLE) to disable or 512 to enable.
func (s *Samba) SetUserAccountControl(dn string, uac int) error {
	return s.Modify(fmt.Sprintf("dn: %s\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: %d\n", dn, uac))
}

// SharedSamba provisions one DC on first use and shares it between the
// tests of one test binary (provisioning takes 10-30 s). Declare one per
// test package and Close it from TestMain after m.Run.
type SharedSamba struct {
	opts func() SambaOptions
	once sync.Once
	dc   *Samba
	err  error
}

// NewSharedSamba returns a lazily provisioned DC; opts is called once, on
// first use, to build the dataset.
func NewSharedSamba(opts func() SambaOptions) *SharedSamba {
	return &SharedSamba{opts: opts}
}

// Get returns the shared DC, provisioning it on the first call. It skips t
// when Samba is unavailable (fails it with DIRSYNC_REQUIRE_INTEGRATION=1)
// and fails t when provisioning fails.
func (sh *SharedSamba) Get(t testing.TB) *Samba {
	t.Helper()
	sh.once.Do(func() {
		var o SambaOptions
		if sh.opts != nil {
			o = sh.opts()
		}
		sh.dc, sh.err = ProvisionSamba(o)
		if sh.err == nil {
			t.Logf("samba DC provisioned on %s in %v", sh.dc.IP, sh.dc.ProvisionTime.Round(time.Millisecond))
		}
	})
	if errors.Is(sh.err, ErrUnavailable) {
		Unavailable(t, "samba: %v", sh.err)
	}
	if sh.err != nil {
		t.Fatalf("samba: %v", sh.err)
	}
	return sh.dc
}

// Close stops the DC if it was started.
func (sh *SharedSamba) Close() {
	if sh.dc != nil {
		sh.dc.Close()
	}
}

// ensureBinaries finds every binary (name → package), installing the given
// packages with apt-get when one is missing and the process runs as root.
func ensureBinaries(bins map[string]string, packages ...string) (map[string]string, error) {
	paths := map[string]string{}
	var missing []string
	for name := range bins {
		p, err := LookBinary(name)
		if err != nil {
			missing = append(missing, name)
			continue
		}
		paths[name] = p
	}
	if len(missing) == 0 {
		return paths, nil
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("%w: %s not installed; install with: sudo apt-get install -y %s", ErrUnavailable, strings.Join(missing, ", "), strings.Join(packages, " "))
	}
	if err := aptInstall(packages...); err != nil {
		return nil, fmt.Errorf("%w: apt-get install failed: %v", ErrUnavailable, err)
	}
	for _, name := range missing {
		p, err := LookBinary(name)
		if err != nil {
			return nil, fmt.Errorf("%w: %s still missing after apt-get install %s", ErrUnavailable, name, strings.Join(packages, " "))
		}
		paths[name] = p
	}
	return paths, nil
}
