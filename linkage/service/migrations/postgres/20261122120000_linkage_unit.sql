-- The linkage unit's store (SPEC.md §10.6). No column holds an identifier, a key or
-- plaintext content: uploads are token files and content sealed to the researcher.
CREATE TABLE lu_projects (
    name TEXT PRIMARY KEY,
    holders TEXT NOT NULL,                -- JSON array of party names, in order
    researcher TEXT NOT NULL,
    researcher_public_key BYTEA NOT NULL,
    schema_toml BYTEA NOT NULL,
    schema_digest TEXT NOT NULL,
    duplicates TEXT NOT NULL,             -- JSON array
    pid_salt BYTEA NOT NULL,                 -- 32 random bytes: pseudonyms per project
    stale BIGINT NOT NULL DEFAULT 0,          -- 1: opt-outs arrived after the latest job
    created_unix_ms BIGINT NOT NULL
);

CREATE TABLE lu_uploads (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    party TEXT NOT NULL,
    upload_id TEXT NOT NULL,              -- hex SHA-256 of the whole file
    kind BIGINT NOT NULL,                     -- UploadKind
    total_chunks BIGINT NOT NULL,
    total_bytes BIGINT NOT NULL,
    complete BIGINT NOT NULL DEFAULT 0,
    superseded BIGINT NOT NULL DEFAULT 0,
    records BIGINT NOT NULL DEFAULT 0,
    created_unix_ms BIGINT NOT NULL,
    PRIMARY KEY (project, party, upload_id)
);

CREATE TABLE lu_chunks (
    project TEXT NOT NULL,
    party TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    sha256 BYTEA NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (project, party, upload_id, idx),
    FOREIGN KEY (project, party, upload_id)
        REFERENCES lu_uploads(project, party, upload_id) ON DELETE CASCADE
);

CREATE TABLE lu_jobs (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    job_id BIGINT NOT NULL,
    state BIGINT NOT NULL,                    -- JobState
    stage TEXT NOT NULL,
    progress DOUBLE PRECISION NOT NULL,
    error TEXT NOT NULL,
    started_unix_ms BIGINT NOT NULL,
    finished_unix_ms BIGINT NOT NULL,
    records BIGINT NOT NULL,
    clusters BIGINT NOT NULL,
    excluded BIGINT NOT NULL,
    links BIGINT NOT NULL,
    PRIMARY KEY (project, job_id)
);

-- One row per record of a completed job: its pseudonym, and whether its cluster is excluded.
CREATE TABLE lu_members (
    project TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    party TEXT NOT NULL,
    position BIGINT NOT NULL,                 -- 0-based record number in the holder's upload
    record_id TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    excluded BIGINT NOT NULL,
    PRIMARY KEY (project, job_id, party, position),
    FOREIGN KEY (project, job_id) REFERENCES lu_jobs(project, job_id) ON DELETE CASCADE
);
CREATE INDEX lu_members_by_pseudonym ON lu_members (project, job_id, pseudonym);

CREATE TABLE lu_releases (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    release_id BIGINT NOT NULL,
    job_id BIGINT NOT NULL,
    researcher TEXT NOT NULL,
    clusters BIGINT NOT NULL,
    unix_ms BIGINT NOT NULL,
    PRIMARY KEY (project, release_id)
);

CREATE TABLE lu_release_pseudonyms (
    project TEXT NOT NULL,
    release_id BIGINT NOT NULL,
    pseudonym TEXT NOT NULL,
    PRIMARY KEY (project, release_id, pseudonym),
    FOREIGN KEY (project, release_id) REFERENCES lu_releases(project, release_id) ON DELETE CASCADE
);

-- Hash-chained audit log (keys/core audit layout), kept when projects are deleted.
CREATE TABLE lu_audit (
    sequence BIGINT PRIMARY KEY,
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
