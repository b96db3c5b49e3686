-- Console-managed accounts: who belongs to which account, with which
-- permission, and the audit trail of every administrator action.

CREATE TABLE console_members (
    account_id     text        NOT NULL,
    -- Normalised (lower-case) address.
    email          text        NOT NULL CHECK (email = lower(email) AND email LIKE '_%@_%'),
    -- Stable identity published as the decision's user_id; kept across a
    -- removal and a new invitation to the same account.
    user_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    state          text        NOT NULL CHECK (state IN ('invited', 'member', 'removed')),
    permission     text        NOT NULL CHECK (permission IN ('pro', 'basic', 'none')),
    suspended      boolean     NOT NULL DEFAULT false,
    -- How the user came to the account.
    source         text        NOT NULL CHECK (source IN ('invitation', 'registration')),
    invited_at     timestamptz,
    invited_by     text,
    joined_at      timestamptz,
    -- When accepting a team invitation ended the user's free Pro trial.
    trial_ended_at timestamptz,
    suspended_at   timestamptz,
    removed_at     timestamptz,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (account_id, email),
    CHECK (state <> 'member' OR joined_at IS NOT NULL),
    CHECK (NOT suspended OR state = 'member')
);

-- An email is invited to, or a member of, one account at a time: a second
-- invitation elsewhere fails on this index, whatever the race.
CREATE UNIQUE INDEX console_members_active_email ON console_members (email) WHERE state <> 'removed';

CREATE TABLE console_audit (
    id         bigserial   PRIMARY KEY,
    at         timestamptz NOT NULL,
    account_id text        NOT NULL,
    -- Who: the X-Dirsync-Actor of the API request (the CLI sends the
    -- operator's name), "admin-api" when absent.
    actor      text        NOT NULL,
    -- What: invite, accept, register, set_permission, remove,
    -- revoke_invitation, suspend, unsuspend.
    action     text        NOT NULL,
    email      text        NOT NULL,
    detail     jsonb       NOT NULL DEFAULT '{}'
);

CREATE INDEX console_audit_account ON console_audit (account_id, id);
