//! Authorization (SPEC.md §10.2): who may call what, as in the custodian (§8.3).
//!
//! 1. **Role**: each RPC belongs to its role(s) ([`Rpc::roles`]); any other certificate is
//!    refused with PERMISSION_DENIED.
//! 2. **Project**: a holder must be one of the project's holders, the researcher the
//!    project's researcher. A project that does not exist is refused the same way, so that
//!    nobody can probe which projects exist.
//!
//! Identity comes only from the verified client certificate. Both checks run inside
//! `renketsu_rpc::handle`: check 1 from [`Rpc`]'s `Method` implementation, check 2 from the
//! service's membership rule ([`check_project`]) for the RPCs whose [`Rpc::scope`] is
//! `Project`.

use std::fmt;

use renketsu_rpc::{Method, PeerIdentity, Role, Scope, ServiceError};

use crate::store::ProjectRow;

/// The gRPC service path prefix of `renketsu.v1.LinkageUnit`.
pub const SERVICE_PATH: &str = "/renketsu.v1.LinkageUnit/";

/// One RPC of `renketsu.v1.LinkageUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// Admin.
    CreateLinkageProject,
    /// Admin.
    ListLinkageProjects,
    /// Admin.
    DeleteLinkageProject,
    /// Admin.
    StartJob,
    /// Admin.
    GetJob,
    /// Admin.
    CancelJob,
    /// Admin.
    GetQualityReport,
    /// Admin.
    RekeyTokens,
    /// Holder or researcher.
    GetLinkageProject,
    /// Holder.
    Upload,
    /// Holder.
    GetUploadStatus,
    /// Holder.
    FetchMapping,
    /// Holder.
    Traceback,
    /// Researcher.
    FetchRelease,
    /// Researcher.
    GetCrosswalk,
    /// Auditor.
    ReadLinkageAuditLog,
}

impl Rpc {
    /// Every RPC, in `.proto` order.
    pub const ALL: [Rpc; 16] = [
        Rpc::CreateLinkageProject,
        Rpc::ListLinkageProjects,
        Rpc::DeleteLinkageProject,
        Rpc::StartJob,
        Rpc::GetJob,
        Rpc::CancelJob,
        Rpc::GetQualityReport,
        Rpc::RekeyTokens,
        Rpc::GetLinkageProject,
        Rpc::Upload,
        Rpc::GetUploadStatus,
        Rpc::FetchMapping,
        Rpc::Traceback,
        Rpc::FetchRelease,
        Rpc::GetCrosswalk,
        Rpc::ReadLinkageAuditLog,
    ];

    /// The method name.
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::CreateLinkageProject => "CreateLinkageProject",
            Rpc::ListLinkageProjects => "ListLinkageProjects",
            Rpc::DeleteLinkageProject => "DeleteLinkageProject",
            Rpc::StartJob => "StartJob",
            Rpc::GetJob => "GetJob",
            Rpc::CancelJob => "CancelJob",
            Rpc::GetQualityReport => "GetQualityReport",
            Rpc::RekeyTokens => "RekeyTokens",
            Rpc::GetLinkageProject => "GetLinkageProject",
            Rpc::Upload => "Upload",
            Rpc::GetUploadStatus => "GetUploadStatus",
            Rpc::FetchMapping => "FetchMapping",
            Rpc::Traceback => "Traceback",
            Rpc::FetchRelease => "FetchRelease",
            Rpc::GetCrosswalk => "GetCrosswalk",
            Rpc::ReadLinkageAuditLog => "ReadLinkageAuditLog",
        }
    }

    /// The full gRPC path recorded in audit entries.
    pub fn path(self) -> String {
        format!("{SERVICE_PATH}{}", self.name())
    }

    /// The roles that may make this call.
    pub const fn roles(self) -> &'static [Role] {
        match self {
            Rpc::CreateLinkageProject
            | Rpc::ListLinkageProjects
            | Rpc::DeleteLinkageProject
            | Rpc::StartJob
            | Rpc::GetJob
            | Rpc::CancelJob
            | Rpc::GetQualityReport
            | Rpc::RekeyTokens => &[Role::Admin],
            Rpc::GetLinkageProject => &[Role::DataHolder, Role::Researcher],
            Rpc::Upload | Rpc::GetUploadStatus | Rpc::FetchMapping | Rpc::Traceback => {
                &[Role::DataHolder]
            }
            Rpc::FetchRelease | Rpc::GetCrosswalk => &[Role::Researcher],
            Rpc::ReadLinkageAuditLog => &[Role::Auditor],
        }
    }

    /// Whether the call acts on one project the caller must belong to (check 2). Creating,
    /// listing and deleting projects and reading the audit log are service-wide.
    pub const fn scope(self) -> Scope {
        match self {
            Rpc::CreateLinkageProject
            | Rpc::ListLinkageProjects
            | Rpc::DeleteLinkageProject
            | Rpc::ReadLinkageAuditLog => Scope::Service,
            _ => Scope::Project,
        }
    }
}

impl Method for Rpc {
    fn path(self) -> String {
        Rpc::path(self)
    }

    fn roles(self) -> &'static [Role] {
        Rpc::roles(self)
    }

    fn scope(self) -> Scope {
        Rpc::scope(self)
    }
}

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Check 2: the caller belongs to `project` (`None`: it does not exist, refused alike).
pub fn check_project(
    rpc: Rpc,
    who: &PeerIdentity,
    project_name: &str,
    project: Option<&ProjectRow>,
) -> Result<(), ServiceError> {
    let allowed = match (who.role, project) {
        (_, None) => false,
        (Role::DataHolder, Some(p)) => p.holders.iter().any(|h| h == &who.party),
        (Role::Researcher, Some(p)) => p.researcher == who.party,
        (Role::Admin | Role::Auditor, Some(_)) => true,
        (Role::LinkageUnit, Some(_)) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ServiceError::PermissionDenied(format!(
            "{rpc}: {} is not part of linkage project {project_name:?} (or it does not exist)",
            who.party
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_membership() {
        use renketsu_rpc::call::check_role;
        let id = |party: &str, role| PeerIdentity {
            party: party.to_owned(),
            role,
        };
        for rpc in Rpc::ALL {
            assert!(!rpc.roles().is_empty());
            assert!(
                check_role(rpc, &id("lu", Role::LinkageUnit)).is_err(),
                "{rpc}"
            );
        }
        assert!(check_role(Rpc::FetchRelease, &id("h", Role::DataHolder)).is_err());
        assert!(check_role(Rpc::GetCrosswalk, &id("h", Role::DataHolder)).is_err());
        assert!(check_role(Rpc::GetCrosswalk, &id("a", Role::Admin)).is_err());
        assert!(check_role(Rpc::FetchMapping, &id("r", Role::Researcher)).is_err());
        let p = ProjectRow {
            name: "p".into(),
            holders: vec!["a".into(), "b".into()],
            researcher: "r".into(),
            researcher_public_key: vec![],
            schema_toml: vec![],
            schema_digest: String::new(),
            duplicates: vec![],
            pid_salt: vec![],
            stale: false,
            created_unix_ms: 0,
        };
        assert!(check_project(Rpc::Upload, &id("a", Role::DataHolder), "p", Some(&p)).is_ok());
        assert!(check_project(Rpc::Upload, &id("c", Role::DataHolder), "p", Some(&p)).is_err());
        assert!(check_project(Rpc::Upload, &id("a", Role::DataHolder), "p", None).is_err());
        assert!(
            check_project(Rpc::FetchRelease, &id("r", Role::Researcher), "p", Some(&p)).is_ok()
        );
        assert!(
            check_project(Rpc::FetchRelease, &id("s", Role::Researcher), "p", Some(&p)).is_err()
        );
    }
}
