// Package store is the writer side of the access cache: the Redis writer
// the engine publishes through (plain, or fenced by a replica's lease), and
// an in-process Memory backend for trials and tests. The key layout and the
// reader the sign-in service imports are in the public package
// entitlement/accesscache; this package writes exactly that layout.
package store
