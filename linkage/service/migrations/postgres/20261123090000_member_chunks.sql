-- Job results as chunks (SPEC.md §10.6): one row per ~1 MiB of packed (record id,
-- pseudonym, excluded) rows per holder instead of one row per record. At 10^7 records the
-- per-row table and its two indexes took minutes to write; the chunks take seconds.
--
-- Results of earlier jobs are not converted: those jobs are marked failed (state 3) with a
-- message, and the next job run writes chunks.
UPDATE lu_jobs SET state = 3,
    error = 'results dropped by the store migration to result chunks; start the job again'
    WHERE state = 2;
DROP TABLE lu_members;

CREATE TABLE lu_member_chunks (
    project TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    party TEXT NOT NULL,
    first_position BIGINT NOT NULL,   -- position of the chunk's first row in the holder's upload
    records BIGINT NOT NULL,          -- rows in data
    data BYTEA NOT NULL,  -- rows: LEB128 id length, id, 16-byte pseudonym, excluded
    PRIMARY KEY (project, job_id, party, first_position)
);
ALTER TABLE lu_member_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
