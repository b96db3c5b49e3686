package mapper

import "github.com/dirsync/dirsync/entitlement"

// Published is what the cache holds for one email, enough to diff against
// without reading the decision back.
type Published struct {
	Permission  entitlement.Permission
	Allowed     bool
	Fingerprint uint64
}

// PublishedOf summarises a decision as it will be published.
func PublishedOf(d *entitlement.Decision) Published {
	return Published{Permission: d.Permission, Allowed: d.Allowed, Fingerprint: Fingerprint(d)}
}

// Change is one email whose published decision must change. New is nil when
// the email must be removed from the cache (it left the account); Old is nil
// when nothing was published for it.
type Change struct {
	Email string
	Old   *Published
	New   *entitlement.Decision
	// Next is New summarised (zero when New is nil).
	Next Published
	// ByInvitation is set when the account publishes this email without
	// claiming its domain (a team's invitation): the write never replaces
	// another account's decision for the email. It is false for an account
	// that claims the email's domain (every decision Map makes), whose
	// decision takes the user key over from any other account: claimed
	// domains win over invitations (see package store).
	ByInvitation bool
}

// Delta is what a publish would change.
type Delta struct {
	Changes   []Change
	Unchanged int
	// Added, Removed and Updated count the changes by kind.
	Added   int
	Removed int
	Updated int
	// PreviouslyAllowed is how many published decisions allowed sign-in.
	PreviouslyAllowed int
	// LostAccess counts emails allowed before and denied or removed now.
	LostAccess int
	// LostAccessByStatus is the part of LostAccess the directory explains
	// by account state (AccountStateDenial: suspended, inactive, locked
	// out, duplicate identity): such losses are never held by the safeguard.
	LostAccessByStatus int
	// Downgrades counts pro → basic.
	Downgrades int
	// GainedAccess counts emails denied or absent before and allowed now.
	GainedAccess int
}

// parallelDiffMin is the number of decisions from which Diff splits its
// work over two goroutines (a 100k diff is ~60 ms of fingerprints and
// lookups; a pass after its read has both cores to itself).
const parallelDiffMin = 20_000

// Diff compares what is published with the new decisions (sorted or not)
// and returns the changes needed, removals last, in next's order.
func Diff(prev map[string]Published, next []entitlement.Decision) Delta {
	var (
		d       Delta
		matched int
		unique  bool
	)
	if len(next) >= parallelDiffMin {
		mid := len(next) / 2
		var tail diffPart
		done := make(chan struct{})
		go func() {
			defer close(done)
			tail = diffRange(prev, next, mid, len(next))
		}()
		head := diffRange(prev, next, 0, mid)
		head.d.PreviouslyAllowed = allowedIn(prev)
		<-done
		d, matched = head.d, head.matched+tail.matched
		unique = head.sorted && tail.sorted && next[mid].Email > next[mid-1].Email
		d.add(&tail.d)
	} else {
		part := diffRange(prev, next, 0, len(next))
		d, matched, unique = part.d, part.matched, part.sorted
		d.PreviouslyAllowed = allowedIn(prev)
	}
	// When next is strictly sorted (as Map returns it) its emails are
	// unique, and matching every published email means nothing is removed:
	// no set of next's emails is needed.
	if unique && matched == len(prev) {
		return d
	}
	seen := make(map[string]struct{}, len(next))
	for i := range next {
		seen[next[i].Email] = struct{}{}
	}
	for email, p := range prev {
		if _, ok := seen[email]; ok {
			continue
		}
		o := p
		d.Changes = append(d.Changes, Change{Email: email, Old: &o})
		d.Removed++
		if p.Allowed {
			d.LostAccess++
		}
	}
	return d
}

// allowedIn counts the published decisions that allow sign-in.
func allowedIn(prev map[string]Published) int {
	n := 0
	for _, p := range prev {
		if p.Allowed {
			n++
		}
	}
	return n
}

// diffPart is Diff over part of next.
type diffPart struct {
	d       Delta // without PreviouslyAllowed
	matched int   // decisions whose email is published
	sorted  bool  // the part is strictly sorted by email
}

// diffRange diffs next[lo:hi] against prev: changes and counts, no
// removals.
func diffRange(prev map[string]Published, next []entitlement.Decision, lo, hi int) diffPart {
	part := diffPart{sorted: true}
	d := &part.d
	for i := lo; i < hi; i++ {
		n := &next[i]
		if i > lo && n.Email <= next[i-1].Email {
			part.sorted = false
		}
		old, had := prev[n.Email]
		if had {
			part.matched++
		}
		next := PublishedOf(n)
		if had && old == next {
			d.Unchanged++
			continue
		}
		c := Change{Email: n.Email, New: n, Next: next}
		if had {
			o := old
			c.Old = &o
			d.Updated++
		} else {
			d.Added++
		}
		wasAllowed := had && old.Allowed
		switch {
		case wasAllowed && !n.Allowed:
			d.LostAccess++
			if AccountStateDenial(n.Reason) {
				d.LostAccessByStatus++
			}
		case !wasAllowed && n.Allowed:
			d.GainedAccess++
		case wasAllowed && old.Permission == entitlement.PermissionPro && n.Permission == entitlement.PermissionBasic:
			d.Downgrades++
		}
		d.Changes = append(d.Changes, c)
	}
	return part
}

// add adds o's changes (after d's) and counts to d.
func (d *Delta) add(o *Delta) {
	d.Changes = append(d.Changes, o.Changes...)
	d.Unchanged += o.Unchanged
	d.Added += o.Added
	d.Removed += o.Removed
	d.Updated += o.Updated
	d.PreviouslyAllowed += o.PreviouslyAllowed
	d.LostAccess += o.LostAccess
	d.LostAccessByStatus += o.LostAccessByStatus
	d.Downgrades += o.Downgrades
	d.GainedAccess += o.GainedAccess
}
