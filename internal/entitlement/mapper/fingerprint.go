package mapper

import (
	"github.com/dirsync/dirsync/entitlement"

	"encoding/binary"
	"math"
	"math/bits"
	"time"
)

// Fingerprint identifies a decision's content, ignoring SyncedAt: two
// decisions with the same fingerprint need no cache write. It hashes the
// fields directly (FNV-1a, 64 bits), every string length-prefixed and
// every optional field tagged present or absent, so two different
// decisions cannot run together into one input. Strings are mixed eight
// bytes at a time (128-bit multiply, as wyhash does); the function is
// fixed, so fingerprints stored in the cache stay valid across processes. Every field of Decision
// and Detail but SyncedAt must be hashed here (TestFingerprintCoversEveryField
// fails for one that is not).
func Fingerprint(d *entitlement.Decision) uint64 {
	h := hasher{offset64}
	h.str(d.Email)
	h.str(d.Account)
	h.bool(d.Allowed)
	h.str(string(d.Permission))
	h.str(string(d.Reason))
	h.bool(d.Capabilities.HostMeetings)
	h.bool(d.Capabilities.AttendMeetings)
	h.bool(d.Capabilities.Chat)
	h.str(d.UserID)
	h.strs(d.Via)
	if dt := d.Detail; dt == nil {
		h.byte(0)
	} else {
		h.byte(1)
		h.str(dt.Rule)
		h.str(dt.DirectoryStatus)
		if dt.ExpiresAt == nil {
			h.byte(0)
		} else {
			h.byte(1)
			h.time(*dt.ExpiresAt)
		}
		if dt.InAccessGroup == nil {
			h.byte(0)
		} else {
			h.byte(1)
			h.bool(*dt.InAccessGroup)
		}
		if dt.Paths == nil {
			h.byte(0)
		} else {
			h.byte(1)
			h.uint(uint64(len(dt.Paths)))
			for i := range dt.Paths {
				p := &dt.Paths[i]
				h.str(p.Binding)
				h.str(string(p.Permission))
				h.strs(p.Groups)
			}
		}
		h.str(dt.DN)
		h.str(dt.Source)
	}
	return h.h
}

const (
	offset64 = 0xa0761d6478bd642f
	mixK     = 0xe7037ed1a0b428db
)

type hasher struct{ h uint64 }

func (f *hasher) mix(w uint64) {
	hi, lo := bits.Mul64(f.h^w, mixK)
	f.h = hi ^ lo
}

func (f *hasher) byte(b byte) { f.mix(uint64(b) | 0x100) }

func (f *hasher) uint(n uint64) { f.mix(n) }

func (f *hasher) str(s string) {
	f.uint(uint64(len(s)) | 1<<63)
	for len(s) >= 8 {
		f.mix(binary.LittleEndian.Uint64([]byte(s[:8])))
		s = s[8:]
	}
	if len(s) > 0 {
		var tail [8]byte
		copy(tail[:], s)
		f.mix(binary.LittleEndian.Uint64(tail[:]))
	}
}

func (f *hasher) strs(ss []string) {
	if ss == nil {
		f.uint(math.MaxUint64)
		return
	}
	f.uint(uint64(len(ss)))
	for _, s := range ss {
		f.str(s)
	}
}

func (f *hasher) bool(b bool) {
	if b {
		f.byte(1)
	} else {
		f.byte(0)
	}
}

// time hashes an instant and its zone offset (the JSON form shows both).
func (f *hasher) time(t time.Time) {
	_, off := t.Zone()
	f.uint(uint64(t.UnixNano()))
	f.uint(uint64(int64(off)))
}
