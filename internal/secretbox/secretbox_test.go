package secretbox

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpenAndRotate(t *testing.T) {
	oldKey, newKeyB := newKey(t), newKey(t)
	old, err := NewKeyring(oldKey)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := old.Seal([]byte("s3cret"), "acme/bind_password")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("s3cret")) {
		t.Fatal("sealed value holds the plaintext")
	}
	again, _ := old.Seal([]byte("s3cret"), "acme/bind_password")
	if bytes.Equal(sealed, again) {
		t.Error("two seals of one value are equal (nonce reused)")
	}
	// Another account or field: refused.
	for _, aad := range []string{"globex/bind_password", "acme/token", ""} {
		if _, err := old.Open(sealed, aad); !errors.Is(err, ErrOpen) {
			t.Errorf("opened for %q: %v", aad, err)
		}
	}
	// Damaged: refused.
	bad := bytes.Clone(sealed)
	bad[len(bad)-1] ^= 1
	if _, err := old.Open(bad, "acme/bind_password"); !errors.Is(err, ErrOpen) {
		t.Errorf("damaged value opened: %v", err)
	}
	// Rotation: the new primary opens old values while they are re-sealed.
	rotating, err := NewKeyring(newKeyB, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	if !rotating.Stale(sealed) {
		t.Error("a value sealed with the previous key is not stale")
	}
	plain, err := rotating.Open(sealed, "acme/bind_password")
	if err != nil || string(plain) != "s3cret" {
		t.Fatalf("open with the previous key: %q %v", plain, err)
	}
	resealed, err := rotating.Seal(plain, "acme/bind_password")
	if err != nil || rotating.Stale(resealed) {
		t.Fatalf("re-seal: stale=%t %v", rotating.Stale(resealed), err)
	}
	done, _ := NewKeyring(newKeyB)
	if _, err := done.Open(resealed, "acme/bind_password"); err != nil {
		t.Errorf("after rotation: %v", err)
	}
	if _, err := done.Open(sealed, "acme/bind_password"); !errors.Is(err, ErrOpen) {
		t.Errorf("the retired key's value still opens: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	k := newKey(t)
	if got, err := ParseKey(" " + hex.EncodeToString(k) + "\n"); err != nil || !bytes.Equal(got, k) {
		t.Errorf("hex: %v", err)
	}
	for _, bad := range []string{"", "short", hex.EncodeToString(k[:31]), string(k)} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	if _, err := NewKeyring(k, k); err == nil {
		t.Error("a key given twice accepted")
	}
	if _, err := NewKeyring(k[:16]); err == nil {
		t.Error("a 16-byte key accepted")
	}
}
