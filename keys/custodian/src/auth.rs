//! Authorization (SPEC.md §8.3): who may call what.
//!
//! Two checks, both required:
//! 1. **Role**: each RPC belongs to exactly one role ([`Rpc::role`]); a certificate of any
//!    other role is refused with PERMISSION_DENIED. So the linkage unit can never evaluate
//!    or receive a CLK key, and a holder never receives a re-keying delta.
//! 2. **Project**: project-scoped RPCs also need the caller to belong to the project: a data
//!    holder must be enrolled in it, the linkage unit must be the one named at CreateProject.
//!    A project that does not exist is refused the same way, so that a holder cannot probe
//!    which projects exist.
//!
//! Identity comes only from the verified client certificate, never from request fields. Both
//! checks run inside `renketsu_rpc::handle`: check 1 from [`Rpc`]'s `Method` implementation,
//! check 2 from the service's membership rule ([`check_project`]) for the RPCs whose
//! [`Rpc::scope`] is `Project`.

use std::fmt;

use renketsu_rpc::{Method, PeerIdentity, Role, Scope, ServiceError};

/// The gRPC service path prefix of `renketsu.v1.KeyCustodian`.
pub const SERVICE_PATH: &str = "/renketsu.v1.KeyCustodian/";

/// One RPC of `renketsu.v1.KeyCustodian`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rpc {
    /// Admin: create a project.
    CreateProject,
    /// Admin: enrol a holder.
    EnrolHolder,
    /// Admin: rotate a recipe's key.
    RotateEpoch,
    /// Admin: revoke an epoch's key.
    RevokeEpoch,
    /// Admin: list projects.
    ListProjects,
    /// Holder: a public key.
    GetPublicKey,
    /// Holder: evaluate a batch.
    EvaluateBatch,
    /// Holder: a wrapped CLK key.
    GetWrappedClkKey,
    /// Linkage unit: a re-keying delta.
    GetRekeyDelta,
    /// Auditor: stream the audit log.
    ReadAuditLog,
    /// Auditor: the sealed audit head.
    GetAuditHead,
}

impl Rpc {
    /// Every RPC of the service, in `.proto` order.
    pub const ALL: [Rpc; 11] = [
        Rpc::CreateProject,
        Rpc::EnrolHolder,
        Rpc::RotateEpoch,
        Rpc::RevokeEpoch,
        Rpc::ListProjects,
        Rpc::GetPublicKey,
        Rpc::EvaluateBatch,
        Rpc::GetWrappedClkKey,
        Rpc::GetRekeyDelta,
        Rpc::ReadAuditLog,
        Rpc::GetAuditHead,
    ];

    /// The method name, e.g. `EvaluateBatch`.
    pub const fn name(self) -> &'static str {
        match self {
            Rpc::CreateProject => "CreateProject",
            Rpc::EnrolHolder => "EnrolHolder",
            Rpc::RotateEpoch => "RotateEpoch",
            Rpc::RevokeEpoch => "RevokeEpoch",
            Rpc::ListProjects => "ListProjects",
            Rpc::GetPublicKey => "GetPublicKey",
            Rpc::EvaluateBatch => "EvaluateBatch",
            Rpc::GetWrappedClkKey => "GetWrappedClkKey",
            Rpc::GetRekeyDelta => "GetRekeyDelta",
            Rpc::ReadAuditLog => "ReadAuditLog",
            Rpc::GetAuditHead => "GetAuditHead",
        }
    }

    /// The full gRPC path recorded in audit entries, e.g.
    /// `/renketsu.v1.KeyCustodian/EvaluateBatch`.
    pub fn path(self) -> String {
        format!("{SERVICE_PATH}{}", self.name())
    }

    /// The only role that may make this call.
    pub const fn role(self) -> Role {
        match self {
            Rpc::CreateProject
            | Rpc::EnrolHolder
            | Rpc::RotateEpoch
            | Rpc::RevokeEpoch
            | Rpc::ListProjects => Role::Admin,
            Rpc::GetPublicKey | Rpc::EvaluateBatch | Rpc::GetWrappedClkKey => Role::DataHolder,
            Rpc::GetRekeyDelta => Role::LinkageUnit,
            Rpc::ReadAuditLog | Rpc::GetAuditHead => Role::Auditor,
        }
    }

    /// Whether the call acts on one project the caller must belong to (check 2): the
    /// holders' and the linkage unit's calls. The admin's calls name a project too but the
    /// admin may act on every project (the store says NOT_FOUND for one that does not exist).
    pub const fn scope(self) -> Scope {
        match self {
            Rpc::GetPublicKey | Rpc::EvaluateBatch | Rpc::GetWrappedClkKey | Rpc::GetRekeyDelta => {
                Scope::Project
            }
            _ => Scope::Service,
        }
    }
}

impl Method for Rpc {
    fn path(self) -> String {
        Rpc::path(self)
    }

    fn roles(self) -> &'static [Role] {
        match self.role() {
            Role::Admin => &[Role::Admin],
            Role::DataHolder => &[Role::DataHolder],
            Role::LinkageUnit => &[Role::LinkageUnit],
            Role::Auditor => &[Role::Auditor],
            Role::Researcher => &[Role::Researcher],
        }
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

/// What check 2 needs to know about a project: who belongs to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership<'a> {
    /// Whether the calling holder is enrolled in the project.
    pub holder_enrolled: bool,
    /// The project's linkage unit party name.
    pub linkage_unit: &'a str,
}

/// Check 2: the caller belongs to `project`. `membership` is `None` when the project does not
/// exist; that is refused exactly like a project the caller is not part of.
pub fn check_project(
    rpc: Rpc,
    who: &PeerIdentity,
    project: &str,
    membership: Option<&Membership<'_>>,
) -> Result<(), ServiceError> {
    let allowed = match (who.role, membership) {
        (_, None) => false,
        (Role::DataHolder, Some(m)) => m.holder_enrolled,
        (Role::LinkageUnit, Some(m)) => m.linkage_unit == who.party,
        (Role::Admin | Role::Auditor, Some(_)) => true,
        // No custodian RPC is a researcher's; check_role refuses it first.
        (Role::Researcher, Some(_)) => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(not_member(rpc, who, project))
    }
}

/// The PERMISSION_DENIED error of check 2, worded for the caller's role.
pub fn not_member(rpc: Rpc, who: &PeerIdentity, project: &str) -> ServiceError {
    let what = match who.role {
        Role::LinkageUnit => "is not the linkage unit of",
        _ => "is not enrolled in",
    };
    ServiceError::PermissionDenied(format!(
        "{rpc}: {} {what} project {project:?} (or it does not exist)",
        who.party
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(party: &str, role: Role) -> PeerIdentity {
        PeerIdentity {
            party: party.into(),
            role,
        }
    }

    #[test]
    fn each_rpc_has_exactly_one_role() {
        use renketsu_rpc::call::check_role;
        for rpc in Rpc::ALL {
            let allowed: Vec<Role> = Role::ALL
                .into_iter()
                .filter(|r| check_role(rpc, &id("x", *r)).is_ok())
                .collect();
            assert_eq!(allowed, [rpc.role()], "{rpc}");
            // Exactly the non-admin, non-auditor calls with a project are project-scoped.
            let member_call = matches!(rpc.role(), Role::DataHolder | Role::LinkageUnit);
            assert_eq!(rpc.scope() == Scope::Project, member_call, "{rpc}");
        }
        assert_eq!(Rpc::EvaluateBatch.role(), Role::DataHolder);
        assert!(check_role(Rpc::EvaluateBatch, &id("lu", Role::LinkageUnit)).is_err());
        assert_eq!(
            Rpc::EvaluateBatch.path(),
            "/renketsu.v1.KeyCustodian/EvaluateBatch"
        );
    }

    #[test]
    fn project_membership() {
        let m = Membership {
            holder_enrolled: false,
            linkage_unit: "lu-1",
        };
        let h = id("holder-a", Role::DataHolder);
        assert!(check_project(Rpc::EvaluateBatch, &h, "p", Some(&m)).is_err());
        assert!(check_project(Rpc::EvaluateBatch, &h, "p", None).is_err());
        let enrolled = Membership {
            holder_enrolled: true,
            ..m.clone()
        };
        assert!(check_project(Rpc::EvaluateBatch, &h, "p", Some(&enrolled)).is_ok());
        assert!(
            check_project(
                Rpc::GetRekeyDelta,
                &id("lu-1", Role::LinkageUnit),
                "p",
                Some(&m)
            )
            .is_ok()
        );
        let e = check_project(
            Rpc::GetRekeyDelta,
            &id("lu-2", Role::LinkageUnit),
            "p",
            Some(&m),
        )
        .unwrap_err();
        assert!(e.to_string().contains("not the linkage unit"), "{e}");
    }
}
