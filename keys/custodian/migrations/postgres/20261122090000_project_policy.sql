-- Service-level project policy (SPEC.md §8.3): the RFC 9497 mode the project's holders
-- use and the party name of its linkage unit. Written once, right after the project.
CREATE TABLE project_policy (
    project TEXT PRIMARY KEY REFERENCES projects (name),
    mode TEXT NOT NULL CHECK (mode IN ('oprf', 'voprf')),
    linkage_unit TEXT NOT NULL
);
