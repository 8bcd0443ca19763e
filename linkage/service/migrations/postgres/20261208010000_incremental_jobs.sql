-- Incremental jobs (SPEC.md §10.3.3; issue 16 item 2). mode: while a job runs, what was
-- asked ('auto': incremental where it is exact, 'full': a full re-link); once it is DONE, what
-- ran ('full', 'incremental (…)', 'full (incremental not possible: …)'). basis: what a DONE
-- job linked (JSON: schema digest, per holder its token upload and last batch applied, the
-- opt-out uploads), so that the next job can tell which batches are new.
ALTER TABLE lu_jobs ADD COLUMN mode TEXT NOT NULL DEFAULT '';
ALTER TABLE lu_jobs ADD COLUMN basis TEXT NOT NULL DEFAULT '';
