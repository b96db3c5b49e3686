// Package secretbox seals directory secrets that tenants hand to the
// accounts API (LDAP bind passwords, Okta API tokens) before they are
// stored in PostgreSQL: AES-256-GCM under a key from
// console.secret_key_file, with older keys kept for opening during a
// rotation.
//
// A sealed value is: version (1 byte, 1) | key id (4 bytes: the first four
// bytes of SHA-256 of the key) | nonce (12 bytes) | ciphertext and tag.
// Every value is sealed with additional data naming what it is (an account
// id and a field), so a value copied to another account or field does not
// open.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the size of a key in bytes (AES-256).
const KeySize = 32

const (
	version  = 1
	idSize   = 4
	header   = 1 + idSize
	nonceLen = 12
)

// ErrOpen is returned for a sealed value that no key opens, or that was
// sealed for other additional data, or is damaged.
var ErrOpen = errors.New("secretbox: cannot open the sealed value (wrong key, wrong account or field, or damaged)")

type key struct {
	id   [idSize]byte
	aead cipher.AEAD
}

// Keyring seals with its first key and opens with any of its keys.
type Keyring struct {
	keys []key
}

// ParseKey reads a key as written in a key file: 32 bytes given as 64 hex
// digits or as standard base64 (surrounding white space ignored). Raw
// binary is refused so that a truncated or text-mangled file is noticed.
func ParseKey(text string) ([]byte, error) {
	s := strings.TrimSpace(text)
	if b, err := hex.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == KeySize {
		return b, nil
	}
	return nil, fmt.Errorf("a key is %d random bytes written as 64 hex digits or base64 (e.g. openssl rand -hex 32)", KeySize)
}

// NewKeyring returns a keyring that seals with primary and opens with
// primary or any of previous.
func NewKeyring(primary []byte, previous ...[]byte) (*Keyring, error) {
	k := &Keyring{}
	for i, raw := range append([][]byte{primary}, previous...) {
		if len(raw) != KeySize {
			return nil, fmt.Errorf("secretbox: key %d is %d bytes; want %d", i, len(raw), KeySize)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(raw)
		var id [idSize]byte
		copy(id[:], sum[:idSize])
		for _, prev := range k.keys {
			if prev.id == id {
				return nil, fmt.Errorf("secretbox: key %d is given twice", i)
			}
		}
		k.keys = append(k.keys, key{id: id, aead: aead})
	}
	return k, nil
}

// Seal encrypts plaintext for the use named by aad (e.g. "acme/bind_password").
func (k *Keyring) Seal(plaintext []byte, aad string) ([]byte, error) {
	p := k.keys[0]
	out := make([]byte, header+nonceLen, header+nonceLen+len(plaintext)+p.aead.Overhead())
	out[0] = version
	copy(out[1:header], p.id[:])
	if _, err := rand.Read(out[header : header+nonceLen]); err != nil {
		return nil, fmt.Errorf("secretbox: nonce: %w", err)
	}
	return p.aead.Seal(out, out[header:header+nonceLen], plaintext, []byte(aad)), nil
}

// Open decrypts a value Seal made with any key of the keyring for aad.
func (k *Keyring) Open(sealed []byte, aad string) ([]byte, error) {
	if len(sealed) < header+nonceLen || sealed[0] != version {
		return nil, ErrOpen
	}
	for _, c := range k.keys {
		if string(c.id[:]) != string(sealed[1:header]) {
			continue
		}
		plain, err := c.aead.Open(nil, sealed[header:header+nonceLen], sealed[header+nonceLen:], []byte(aad))
		if err != nil {
			return nil, ErrOpen
		}
		return plain, nil
	}
	return nil, ErrOpen
}

// Stale reports whether sealed was sealed with a key other than the
// primary one: a rotation re-seals such values.
func (k *Keyring) Stale(sealed []byte) bool {
	return len(sealed) < header || string(sealed[1:header]) != string(k.keys[0].id[:])
}
