-- The linkage unit's store (SPEC.md §10.6). No column holds an identifier, a key or
-- plaintext content: uploads are token files and content sealed to the researcher.
CREATE TABLE lu_projects (
    name TEXT PRIMARY KEY,
    holders TEXT NOT NULL,                -- JSON array of party names, in order
    researcher TEXT NOT NULL,
    researcher_public_key BLOB NOT NULL,
    schema_toml BLOB NOT NULL,
    schema_digest TEXT NOT NULL,
    duplicates TEXT NOT NULL,             -- JSON array
    pid_salt BLOB NOT NULL,                 -- 32 random bytes: pseudonyms per project
    stale INTEGER NOT NULL DEFAULT 0,          -- 1: opt-outs arrived after the latest job
    created_unix_ms INTEGER NOT NULL
);

CREATE TABLE lu_uploads (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    party TEXT NOT NULL,
    upload_id TEXT NOT NULL,              -- hex SHA-256 of the whole file
    kind INTEGER NOT NULL,                     -- UploadKind
    total_chunks INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL,
    complete INTEGER NOT NULL DEFAULT 0,
    superseded INTEGER NOT NULL DEFAULT 0,
    records INTEGER NOT NULL DEFAULT 0,
    created_unix_ms INTEGER NOT NULL,
    PRIMARY KEY (project, party, upload_id)
);

CREATE TABLE lu_chunks (
    project TEXT NOT NULL,
    party TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (project, party, upload_id, idx),
    FOREIGN KEY (project, party, upload_id)
        REFERENCES lu_uploads(project, party, upload_id) ON DELETE CASCADE
);

CREATE TABLE lu_jobs (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    job_id INTEGER NOT NULL,
    state INTEGER NOT NULL,                    -- JobState
    stage TEXT NOT NULL,
    progress REAL NOT NULL,
    error TEXT NOT NULL,
    started_unix_ms INTEGER NOT NULL,
    finished_unix_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    clusters INTEGER NOT NULL,
    excluded INTEGER NOT NULL,
    links INTEGER NOT NULL,
    PRIMARY KEY (project, job_id)
);

-- One row per record of a completed job: its pseudonym, and whether its cluster is excluded.
CREATE TABLE lu_members (
    project TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    party TEXT NOT NULL,
    position INTEGER NOT NULL,                 -- 0-based record number in the holder's upload
    record_id TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    excluded INTEGER NOT NULL,
    PRIMARY KEY (project, job_id, party, position),
    FOREIGN KEY (project, job_id) REFERENCES lu_jobs(project, job_id) ON DELETE CASCADE
);
CREATE INDEX lu_members_by_pseudonym ON lu_members (project, job_id, pseudonym);

CREATE TABLE lu_releases (
    project TEXT NOT NULL REFERENCES lu_projects(name) ON DELETE CASCADE,
    release_id INTEGER NOT NULL,
    job_id INTEGER NOT NULL,
    researcher TEXT NOT NULL,
    clusters INTEGER NOT NULL,
    unix_ms INTEGER NOT NULL,
    PRIMARY KEY (project, release_id)
);

CREATE TABLE lu_release_pseudonyms (
    project TEXT NOT NULL,
    release_id INTEGER NOT NULL,
    pseudonym TEXT NOT NULL,
    PRIMARY KEY (project, release_id, pseudonym),
    FOREIGN KEY (project, release_id) REFERENCES lu_releases(project, release_id) ON DELETE CASCADE
);

-- Hash-chained audit log (keys/core audit layout), kept when projects are deleted.
CREATE TABLE lu_audit (
    sequence INTEGER PRIMARY KEY,
    unix_time_ms INTEGER NOT NULL,
    actor_party TEXT NOT NULL,
    role INTEGER NOT NULL,
    rpc TEXT NOT NULL,
    project TEXT NOT NULL,
    recipe TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    item_count INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    prev_hash BLOB NOT NULL,
    entry_hash BLOB NOT NULL
);
