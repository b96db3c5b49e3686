package main

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/sync/apimux"
)

// apiCredentials builds the API's credentials from cfg for the listener
// the daemon is really bound to. A configured token that reads empty is
// an error, never "no auth"; without a configured admin token (loopback
// only) state-changing calls need the per-start token; without a read
// token (loopback only) the sign-in read is open.
func (d *daemon) apiCredentials(cfg *config.Config, hooks []apimux.OktaHookSecret) (apimux.Credentials, error) {
	c := apimux.Credentials{OktaHooks: hooks}
	adminSet := cfg.API.AdminTokenFile != "" || cfg.API.AdminTokenEnv != ""
	readSet := cfg.API.ReadTokenFile != "" || cfg.API.ReadTokenEnv != ""
	var err error
	if adminSet {
		if c.Admin, err = configuredToken("api.admin_token", cfg.API.AdminTokenFile, cfg.API.AdminTokenEnv, d.env); err != nil {
			return c, err
		}
	}
	if readSet {
		if c.Reader, err = configuredToken("api.read_token", cfg.API.ReadTokenFile, cfg.API.ReadTokenEnv, d.env); err != nil {
			return c, err
		}
	}
	if adminSet && readSet {
		return c, nil
	}
	loopback, err := apimux.LoopbackListener(d.listenAddr)
	if err != nil {
		missing := "api.admin_token_file"
		if adminSet {
			missing = "api.read_token_file"
		}
		return c, fmt.Errorf("%s: required: dirsync listens on %v, which is not loopback-only (%w)", missing, d.listenAddr, err)
	}
	if !adminSet {
		if c.Admin, err = d.perStartToken(); err != nil {
			return c, err
		}
	}
	if !readSet {
		c.OpenSignIn = loopback
		if !adminSet {
			c.OpenAdminReads = loopback
		}
	}
	return c, nil
}

// configuredToken reads a configured token; an empty one is an error.
func configuredToken(path, file, envName string, e env) (apimux.Token, error) {
	secret, err := config.ReadSecret(file, envName, e.getenv)
	if err != nil {
		return apimux.Token{}, fmt.Errorf("%s: %w", path, err)
	}
	source := path + "_file"
	if file == "" {
		source = path + "_env"
	}
	return apimux.NewToken(source, secret)
}

// perStartToken generates the per-start admin token once per process and
// writes it where the CLI of this user finds it; the file stays until the
// daemon exits (after a reload that sets api.admin_token_file it opens
// nothing).
func (d *daemon) perStartToken() (apimux.Token, error) {
	if !d.perStart.IsZero() {
		return d.perStart, nil
	}
	_, port, err := net.SplitHostPort(d.listenAddr.String())
	if err != nil {
		return apimux.Token{}, fmt.Errorf("api.listen: %w", err)
	}
	path := apimux.PerStartTokenPath(d.env.getenv, port)
	tok, err := apimux.GenerateToken("per-start token file " + path)
	if err != nil {
		return apimux.Token{}, err
	}
	remove, err := apimux.WritePerStartToken(path, tok)
	if err != nil {
		return apimux.Token{}, fmt.Errorf("api.admin_token_file is not set, and %w", err)
	}
	d.perStart, d.removePerStart = tok, remove
	d.log.Info("no api.admin_token_file: state-changing API calls need the per-start token written to a file only this user can read; the dirsync CLI finds it",
		zap.String("file", path))
	return tok, nil
}

// daemonAPI is how a CLI command reaches the running daemon.
type daemonAPI struct {
	base  string // http://host:port
	token string // may be empty: the daemon then says which token it wants
}

// daemonFor finds the daemon's URL (server, else the config's api.listen)
// and the admin token to call it with: the config's when cfg is given and
// sets one, else $DIRSYNC_ADMIN_TOKEN, else, for a daemon on a loopback
// address, the per-start token it wrote for its port.
func daemonFor(server string, cfg *config.Config, e env) (daemonAPI, error) {
	if server == "" {
		if cfg == nil {
			return daemonAPI{}, usagef("give --config or --server")
		}
		server = "http://" + cfg.API.Listen
	}
	api := daemonAPI{base: strings.TrimSuffix(server, "/")}
	if cfg != nil && (cfg.API.AdminTokenFile != "" || cfg.API.AdminTokenEnv != "") {
		tok, err := config.ReadSecret(cfg.API.AdminTokenFile, cfg.API.AdminTokenEnv, e.getenv)
		api.token = tok
		return api, err
	}
	if tok := e.getenv("DIRSYNC_ADMIN_TOKEN"); tok != "" {
		api.token = tok
		return api, nil
	}
	u, err := url.Parse(api.base)
	if err != nil || u.Host == "" {
		return api, usagef("--server %q is not a URL like http://127.0.0.1:8080", server)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return api, nil
	}
	if _, err := strconv.Atoi(port); err != nil {
		return api, nil
	}
	api.token, err = apimux.ReadPerStartToken(apimux.PerStartTokenPath(e.getenv, port))
	return api, err
}
