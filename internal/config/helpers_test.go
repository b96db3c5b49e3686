package config_test

import (
	"github.com/dirsync/dirsync/internal/config"
	"github.com/dirsync/dirsync/internal/directory/sources"
)

// parse and load are config.Parse and config.Load with the build's
// source kinds, as the daemon passes them.
func parse(data []byte, dir, name string, getenv func(string) string) (*config.Config, error) {
	return config.Parse(data, dir, name, sources.Config(), getenv)
}

func load(path string, getenv func(string) string) (*config.Config, error) {
	return config.Load(path, sources.Config(), getenv)
}
