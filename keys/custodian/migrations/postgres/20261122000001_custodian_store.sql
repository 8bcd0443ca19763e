-- The key custodian's store, PostgreSQL flavour (keep in step with ../sqlite/).
-- Secret columns end in _sealed: XChaCha20-Poly1305 under the custodian's KEK, AAD binding
-- table, column and row key (SPEC.md, store section). Integers are 64-bit signed; the store
-- converts u64 values and refuses those above 2^63 - 1.

CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_unix_ms BIGINT NOT NULL
);

CREATE TABLE recipes (
    project TEXT NOT NULL REFERENCES projects (name),
    recipe TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (project, recipe)
);

CREATE TABLE epoch_keys (
    project TEXT NOT NULL,
    recipe TEXT NOT NULL,
    epoch BIGINT NOT NULL CHECK (epoch >= 1),
    state TEXT NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'revoked')),
    public_key BYTEA NOT NULL CHECK (octet_length(public_key) = 32),
    seed_sealed BYTEA NOT NULL,
    created_unix_ms BIGINT NOT NULL,
    activates_unix_ms BIGINT,
    retired_unix_ms BIGINT,
    revoked_unix_ms BIGINT,
    PRIMARY KEY (project, recipe, epoch),
    FOREIGN KEY (project, recipe) REFERENCES recipes (project, recipe)
);
-- At most one active and one pending epoch per recipe.
CREATE UNIQUE INDEX epoch_keys_one_active ON epoch_keys (project, recipe) WHERE state = 'active';
CREATE UNIQUE INDEX epoch_keys_one_pending ON epoch_keys (project, recipe) WHERE state = 'pending';

CREATE TABLE clk_keys (
    project TEXT NOT NULL REFERENCES projects (name),
    field TEXT NOT NULL,
    position BIGINT NOT NULL,
    key_sealed BYTEA NOT NULL,
    PRIMARY KEY (project, field)
);

CREATE TABLE holders (
    project TEXT NOT NULL REFERENCES projects (name),
    party TEXT NOT NULL,
    declared_records BIGINT NOT NULL CHECK (declared_records > 0),
    evaluation_quota BIGINT NOT NULL CHECK (evaluation_quota > 0),
    enrolled_unix_ms BIGINT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (project, party)
);

CREATE TABLE evaluation_usage (
    project TEXT NOT NULL,
    party TEXT NOT NULL,
    recipe TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    used BIGINT NOT NULL CHECK (used >= 0),
    PRIMARY KEY (project, party, recipe, epoch),
    FOREIGN KEY (project, party) REFERENCES holders (project, party)
);

CREATE TABLE audit_log (
    sequence BIGINT PRIMARY KEY CHECK (sequence >= 1),
    unix_time_ms BIGINT NOT NULL,
    actor_party TEXT NOT NULL,
    role BIGINT NOT NULL,
    rpc TEXT NOT NULL,
    project TEXT NOT NULL,
    recipe TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    item_count BIGINT NOT NULL,
    status_code BIGINT NOT NULL,
    prev_hash BYTEA NOT NULL,
    entry_hash BYTEA NOT NULL
);

-- One row: the sealed (last sequence, entry hash); NULL while the log is empty.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    head_sealed BYTEA
);
INSERT INTO audit_head (id, head_sealed) VALUES (1, NULL);
