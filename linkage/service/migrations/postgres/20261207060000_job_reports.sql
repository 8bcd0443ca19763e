-- Quality reports of scored jobs (SPEC.md §10.3): summary.json and report.html of the
-- engine, for the admin (GetQualityReport), and the weakest link of each multi-holder
-- cluster for the release (§10.5). None holds an identifier, a token or a record id.
-- Written in the transaction that marks the job DONE.
CREATE TABLE lu_job_reports (
    project TEXT NOT NULL,
    job_id BIGINT NOT NULL,
    summary_json TEXT NOT NULL,
    report_html TEXT NOT NULL,
    weakest_links BYTEA NOT NULL,  -- rows: 16-byte pseudonym, f32 little-endian probability
    PRIMARY KEY (project, job_id)
);
