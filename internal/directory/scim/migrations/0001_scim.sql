-- SCIM accounts: the users and groups identity providers push, the
-- membership rows, and the bearer tokens (stored as SHA-256 hashes).

-- One row per SCIM account. seq is bumped by every write of the account,
-- which holds this row's lock until it commits: an account's writes are
-- serialised, so the versions of its committed rows always form a prefix
-- 1..seq, and an incremental read of "version > last seen" misses nothing.
CREATE TABLE scim_accounts (
    account_id text   PRIMARY KEY,
    seq        bigint NOT NULL
);

CREATE TABLE scim_users (
    account_id    text        NOT NULL,
    id            uuid        NOT NULL,
    user_name     text        NOT NULL,
    -- userName with ASCII letters lower-cased: userName is unique per
    -- account, compared case-insensitively (RFC 7643 caseExact false).
    user_name_key text        NOT NULL,
    external_id   text,
    active        boolean     NOT NULL,
    -- The sign-in email derived from the resource ('' when it has none).
    email         text        NOT NULL,
    -- The resource's attributes (canonical names; no id, meta, schemas).
    doc           jsonb       NOT NULL,
    -- The account's seq of the resource's last change: meta.version.
    version       bigint      NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    -- A deleted resource is kept as a tombstone for a while, so that
    -- incremental reads see the deletion; purged after 7 days.
    deleted       boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (account_id, id)
);
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (account_id, user_name_key) WHERE NOT deleted;
CREATE INDEX scim_users_external_id ON scim_users (account_id, external_id) WHERE NOT deleted;
CREATE INDEX scim_users_version ON scim_users (account_id, version);

CREATE TABLE scim_groups (
    account_id       text        NOT NULL,
    id               uuid        NOT NULL,
    display_name     text        NOT NULL,
    display_name_key text        NOT NULL,
    external_id      text,
    doc              jsonb       NOT NULL,
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    deleted          boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX scim_groups_display_name ON scim_groups (account_id, display_name_key) WHERE NOT deleted;
CREATE INDEX scim_groups_external_id ON scim_groups (account_id, external_id) WHERE NOT deleted;
CREATE INDEX scim_groups_version ON scim_groups (account_id, version);

-- A group's members: users or groups of the same account. A write that
-- changes a group's rows bumps the group's version.
CREATE TABLE scim_members (
    account_id  text NOT NULL,
    group_id    uuid NOT NULL,
    member_id   uuid NOT NULL,
    member_type text NOT NULL CHECK (member_type IN ('User', 'Group')),
    PRIMARY KEY (account_id, group_id, member_id)
);
CREATE INDEX scim_members_member ON scim_members (account_id, member_id);

CREATE TABLE scim_tokens (
    id         uuid        PRIMARY KEY,
    account_id text        NOT NULL,
    -- SHA-256 of the token: the token itself is never stored.
    sha256     bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    created_by text        NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX scim_tokens_account ON scim_tokens (account_id);
