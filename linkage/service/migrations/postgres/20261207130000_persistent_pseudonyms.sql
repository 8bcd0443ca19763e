-- Persistent person pseudonyms and versioned releases (SPEC.md §10.5.1, §10.5.2; issue 16).
-- Every pseudonym issued in a project, with the job that issued it (its age for the survivor
-- rule), the job that retired it (merged away or vanished; 0: names a cluster) and the job
-- that withdrew it (opt-out; 0: not withdrawn). Pseudonyms are 32 lower-case hex digits.
-- Written in the transaction that marks the job DONE.
CREATE TABLE lu_pseudonyms (
    project TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    born_job BIGINT NOT NULL,
    retired_job BIGINT NOT NULL DEFAULT 0,
    withdrawn_job BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project, pseudonym)
);

-- The crosswalk: one row per event of a job (kind new, merge, split, retire or withdraw;
-- old and new pseudonym, '' where there is none), in the same transaction.
CREATE TABLE lu_crosswalk (
    project TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    old_pseudonym TEXT NOT NULL,
    new_pseudonym TEXT NOT NULL,
    PRIMARY KEY (project, job_id, seq)
);

-- Per released pseudonym, the SHA-256 of what was sent for it (holders and sealed records),
-- so that a later release can be sent as a delta against this one; '' in releases made
-- before this change (no delta against them).
ALTER TABLE lu_release_pseudonyms ADD COLUMN digest TEXT NOT NULL DEFAULT '';
