package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ParseSchedule is the one way dirsync parses a cron spec (robfig/cron/v3
// standard syntax plus descriptors such as "@every 5s"). robfig/cron
// panics on some inputs (a bare "TZ=UTC" or "CRON_TZ=…" with nothing after
// it: slice bounds out of range) and accepts some that never or absurdly
// fire ("0 0 30 2 *", "@every -1s"); ParseSchedule turns each of those into
// an error, so a mistyped schedule is a config problem, never a crashed
// daemon or an account that silently stops syncing.
func ParseSchedule(spec string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("robfig/cron cannot parse it (%v); a time zone prefix needs a schedule after it, as in \"CRON_TZ=UTC 0 * * * *\"", r)
		}
	}()
	s, err = cron.ParseStandard(spec)
	if err != nil {
		return nil, err
	}
	if _, every, ok := strings.Cut(spec, "@every "); ok {
		// cron.Every silently rounds anything under a second up to one.
		if d, perr := time.ParseDuration(strings.TrimSpace(every)); perr == nil && d <= 0 {
			return nil, fmt.Errorf("@every needs a positive duration, not %s", strings.TrimSpace(every))
		}
	}
	// A spec that matches no date (February 30th) makes cron give up and
	// return the zero time: the job would never run.
	from := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if s.Next(from).IsZero() {
		return nil, fmt.Errorf("it never fires (no date matches it)")
	}
	return s, nil
}
