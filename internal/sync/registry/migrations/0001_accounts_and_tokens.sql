-- Accounts created through the accounts API (the YAML file's accounts are
-- not here), and the tenant tokens that may manage one account each.

CREATE TABLE registry_accounts (
    id         text        PRIMARY KEY,
    -- The accounts[] document as given, without secret values.
    doc        jsonb       NOT NULL,
    -- The inline secrets (bind_password, token, ...), sealed with
    -- console.secret_key_file (package secretbox).
    secrets    bytea,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    updated_by text        NOT NULL,
    updated_at timestamptz NOT NULL,
    -- Bumped by every write: replicas poll it to apply changes.
    version    bigint      NOT NULL
);

CREATE TABLE registry_tokens (
    -- Shown to the holder (tok_...), recorded as the audit actor.
    id         text        PRIMARY KEY,
    account_id text        NOT NULL,
    -- SHA-256 of the secret: the secret itself is shown once, never stored.
    hash       bytea       NOT NULL UNIQUE,
    name       text        NOT NULL,
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);

CREATE INDEX registry_tokens_account ON registry_tokens (account_id);

-- Every registry write bumps this one counter, so a replica learns of a
-- change (or a deletion) by reading one row.
CREATE TABLE registry_clock (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    version bigint  NOT NULL
);
INSERT INTO registry_clock (version) VALUES (0);
