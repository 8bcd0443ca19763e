-- Incremental uploads (SPEC.md §10.3.2; issue 16 item 1): token and deletion batches on top
-- of a holder's token upload. batch_seq is the batch's place (1, 2, …) in the holder's
-- sequence of batches of the project, given when the batch completes (0: not a batch, or
-- not complete). A complete token upload supersedes the holder's batches.
ALTER TABLE lu_uploads ADD COLUMN batch_seq BIGINT NOT NULL DEFAULT 0;
