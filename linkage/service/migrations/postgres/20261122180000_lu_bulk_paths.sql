-- Bulk paths (issue 7 benchmarks: 10^7-record jobs).
--
-- A job's lu_members rows are written with COPY in the transaction that marks the job DONE;
-- the per-row foreign-key check against lu_jobs doubled the time of that COPY. The store
-- writes members only in that transaction (after updating the job row) and deletes them
-- before their job (delete_project), so the reference holds without the constraint.
ALTER TABLE lu_members DROP CONSTRAINT IF EXISTS lu_members_project_job_id_fkey;

-- Upload chunks are token files and sealed content: base64 of pseudorandom bytes and
-- ciphertext do not compress, so store them uncompressed out of line (no pglz attempt on
-- every 1 MiB chunk written, no decompression when a job reads them).
ALTER TABLE lu_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
