-- Every access change dirsync published, for "why did alice lose Pro on
-- Tuesday". Written after the cache publish; pruned after
-- console.history_retention.
CREATE TABLE access_history (
    id             bigserial   PRIMARY KEY,
    at             timestamptz NOT NULL,
    account_id     text        NOT NULL,
    email          text        NOT NULL,
    old_allowed    boolean     NOT NULL,
    old_permission text        NOT NULL,
    new_allowed    boolean     NOT NULL,
    new_permission text        NOT NULL,
    reason         text        NOT NULL,
    cause          text        NOT NULL,
    actor          text        NOT NULL
);

CREATE INDEX access_history_user ON access_history (account_id, email, id DESC);
CREATE INDEX access_history_at ON access_history (at);
