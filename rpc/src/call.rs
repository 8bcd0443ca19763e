//! The audited call: identity, role, membership and audit in one place (SPEC.md §8.3, §10.2).
//!
//! Every gRPC handler of both services is a closure run by [`handle`]:
//!
//! ```text
//! handle(service, rpc, request, note, |call, req| async { … })
//!   1. identity   the verified client certificate → PeerIdentity     else UNAUTHENTICATED
//!   2. role       rpc.roles() contains the caller's role              else PERMISSION_DENIED
//!   3. handler    runs with a `Call`; for a Scope::Project RPC it must pass
//!                 `call.member(project)` (the service's membership rule) before it may
//!                 succeed: an Ok from a handler that skipped it becomes INTERNAL
//!   4. audit      one entry: caller, rpc path, project, detail, epoch, items, final status,
//!                 refused calls included; if the entry cannot be written the call fails
//!                 with INTERNAL: nothing leaves a service unaudited
//! ```
//!
//! The shape follows the "check the role once, in one extractor" idea of Cloudflare's daphne
//! (`daphne-server` `router/extractor.rs`): the handler only ever sees a caller whose role
//! was checked, and it cannot return without the audit entry being written, because it never
//! builds the response itself. What the audit entry records besides caller and status is an
//! [`AuditNote`], set from the request before the call and amended by the handler
//! ([`Call::note`]).

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use renketsu_keys::audit::AuditEvent;
use renketsu_protocol::v1;
use tonic::{Code, Request, Status};

use renketsu_keys::lifecycle::Clock;

use crate::error::ServiceError;
use crate::pki::{self, PeerIdentity, Role};

/// Whether an RPC acts on one project, and so needs the membership check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scope {
    /// Service-wide (admin creation and listing, audit logs): the role check is all.
    Service,
    /// On one project: the handler must pass [`Call::member`] before it may succeed.
    Project,
}

/// One RPC of a service: its audit path, the roles that may make it and its [`Scope`].
pub trait Method: Copy + fmt::Display + Send + Sync + 'static {
    /// The full gRPC path recorded in audit entries, e.g.
    /// `/renketsu.v1.KeyCustodian/EvaluateBatch`.
    fn path(self) -> String;
    /// The roles that may make this call (never empty).
    fn roles(self) -> &'static [Role];
    /// Whether the call acts on one project.
    fn scope(self) -> Scope;
}

/// What [`handle`] needs from a service: its clock, its audit log and its membership rule.
pub trait RpcService: Send + Sync {
    /// The service's RPCs.
    type Method: Method;
    /// What a successful membership check yields (e.g. the project's row or policy).
    type Member: Send;

    /// The injected clock (audit timestamps).
    fn clock(&self) -> &dyn Clock;

    /// Appends one entry to the service's hash-chained audit log.
    ///
    /// # Errors
    /// Any storage failure, as text for the server's log (the caller gets INTERNAL).
    fn append_audit(&self, event: AuditEvent) -> impl Future<Output = Result<(), String>> + Send;

    /// The membership rule: whether `who` belongs to `project` for `rpc`. A project that
    /// does not exist must be refused like one the caller is not part of (nobody may probe
    /// which projects exist), except where the role may see every project (admin).
    ///
    /// # Errors
    /// PERMISSION_DENIED for a non-member, or whatever the rule's lookups fail with.
    fn check_member(
        &self,
        rpc: Self::Method,
        who: &PeerIdentity,
        project: &str,
    ) -> impl Future<Output = Result<Self::Member, ServiceError>> + Send;
}

/// What an audit entry records besides caller, RPC and status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditNote {
    /// The project named by the call, or empty.
    pub project: String,
    /// The recipe (custodian), or a short description of what was touched (linkage unit:
    /// upload, job, release); never an identifier or token.
    pub detail: String,
    /// Epoch used or created, or 0.
    pub epoch: u64,
    /// Items processed (elements evaluated, entries read, …), or 0.
    pub items: u64,
}

impl AuditNote {
    /// A note naming `project` (empty for service-wide calls).
    pub fn project(project: &str) -> Self {
        Self {
            project: project.to_owned(),
            ..Self::default()
        }
    }

    /// This note with `detail` set.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// This note with `epoch` set.
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// This note with `items` set.
    pub fn with_items(mut self, items: u64) -> Self {
        self.items = items;
        self
    }
}

#[derive(Debug)]
struct Shared {
    note: AuditNote,
    member_checked: bool,
}

/// A call whose caller's role was checked, handed to the handler by [`handle`].
pub struct Call<'s, S: RpcService + ?Sized> {
    service: &'s S,
    rpc: S::Method,
    who: PeerIdentity,
    shared: Arc<Mutex<Shared>>,
}

impl<S: RpcService + ?Sized> fmt::Debug for Call<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("rpc", &self.rpc.to_string())
            .field("who", &self.who)
            .finish_non_exhaustive()
    }
}

impl<'s, S: RpcService + ?Sized> Call<'s, S> {
    /// The caller, from its verified certificate; its role may make this RPC.
    pub fn who(&self) -> &PeerIdentity {
        &self.who
    }

    /// The RPC being handled.
    pub fn rpc(&self) -> S::Method {
        self.rpc
    }

    /// The membership check: `project` goes into the audit note, then the service's rule
    /// ([`RpcService::check_member`]) decides.
    ///
    /// # Errors
    /// The rule's refusal (PERMISSION_DENIED, or NOT_FOUND for an admin) or lookup failure.
    pub async fn member(&self, project: &str) -> Result<S::Member, ServiceError> {
        self.note(|n| n.project = project.to_owned());
        let member = self
            .service
            .check_member(self.rpc, &self.who, project)
            .await?;
        self.lock().member_checked = true;
        Ok(member)
    }

    /// Amends the audit note (items counted, the epoch used, …).
    pub fn note(&self, f: impl FnOnce(&mut AuditNote)) {
        f(&mut self.lock().note);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The caller's identity from its verified client certificate: the first (end-entity)
/// certificate of the TLS peer chain.
///
/// # Errors
/// UNAUTHENTICATED when there is none (a plaintext connection) or when it does not follow
/// the certificate convention ([`pki::identity_from_der`]).
pub fn peer_identity<T>(request: &Request<T>) -> Result<PeerIdentity, ServiceError> {
    let certs = request.peer_certs().ok_or_else(|| {
        ServiceError::Unauthenticated("no client certificate was presented".to_owned())
    })?;
    let leaf = certs.first().ok_or_else(|| {
        ServiceError::Unauthenticated("no client certificate was presented".to_owned())
    })?;
    pki::identity_from_der(leaf.as_ref()).map_err(|e| ServiceError::Unauthenticated(e.to_string()))
}

/// The role check: the caller's role is one of `rpc`'s.
///
/// # Errors
/// PERMISSION_DENIED naming the RPC, its roles and the caller's.
pub fn check_role<M: Method>(rpc: M, who: &PeerIdentity) -> Result<(), ServiceError> {
    if rpc.roles().contains(&who.role) {
        return Ok(());
    }
    let roles: Vec<&str> = rpc.roles().iter().map(|r| r.name()).collect();
    Err(ServiceError::PermissionDenied(format!(
        "{rpc} is for the {} role; {} holds a {} certificate",
        roles.join(" or "),
        who.party,
        who.role
    )))
}

/// Runs one audited call (module docs): identity, role check, `handler` (which must pass
/// [`Call::member`] for a [`Scope::Project`] RPC), then one audit entry with `note` as the
/// handler left it and the final status. Returns the handler's value for the caller to wrap
/// in a response (or to stream from: anything streamed is sent after the entry is written).
///
/// # Errors
/// The refusal or the handler's error as a `Status` ([`ServiceError`]'s mapping); INTERNAL if
/// the audit entry cannot be written, or if a project-scoped handler returned without the
/// membership check.
pub async fn handle<'s, S, Req, T, F, Fut>(
    service: &'s S,
    rpc: S::Method,
    request: Request<Req>,
    note: AuditNote,
    handler: F,
) -> Result<T, Status>
where
    S: RpcService + ?Sized,
    F: FnOnce(Call<'s, S>, Req) -> Fut + Send,
    Fut: Future<Output = Result<T, ServiceError>> + Send,
{
    let identity = peer_identity(&request);
    handle_as(service, rpc, identity, request.into_inner(), note, handler).await
}

/// [`handle`] with the identity already read (or refused): the part tests can drive
/// without a TLS connection.
async fn handle_as<'s, S, Req, T, F, Fut>(
    service: &'s S,
    rpc: S::Method,
    identity: Result<PeerIdentity, ServiceError>,
    req: Req,
    note: AuditNote,
    handler: F,
) -> Result<T, Status>
where
    S: RpcService + ?Sized,
    F: FnOnce(Call<'s, S>, Req) -> Fut + Send,
    Fut: Future<Output = Result<T, ServiceError>> + Send,
{
    let shared = Arc::new(Mutex::new(Shared {
        note,
        member_checked: false,
    }));
    let (who, result) = match identity {
        Err(e) => (None, Err(e)),
        Ok(who) => match check_role(rpc, &who) {
            Err(e) => (Some(who), Err(e)),
            Ok(()) => {
                let call = Call {
                    service,
                    rpc,
                    who: who.clone(),
                    shared: Arc::clone(&shared),
                };
                (Some(who), handler(call, req).await)
            }
        },
    };
    let (note, member_checked) = {
        let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        (s.note.clone(), s.member_checked)
    };
    let result = match result {
        Ok(_) if rpc.scope() == Scope::Project && !member_checked => {
            tracing::error!(rpc = %rpc, "a project-scoped handler skipped the membership check");
            Err(ServiceError::Internal(format!(
                "{rpc}: the handler returned without the membership check"
            )))
        }
        other => other,
    };
    let code = result
        .as_ref()
        .map_or_else(ServiceError::code, |_| Code::Ok);
    let event = AuditEvent {
        unix_time_ms: service.clock().now().as_unix_ms(),
        actor_party: who.as_ref().map(|w| w.party.clone()).unwrap_or_default(),
        role: who
            .as_ref()
            .map_or(v1::Role::Unspecified, |w| w.role.to_proto()) as i32,
        rpc: rpc.path(),
        // Bounded: a caller's oversized string never enters the chain whole.
        project: renketsu_keys::names::audit_field(&note.project),
        recipe: renketsu_keys::names::audit_field(&note.detail),
        epoch: note.epoch,
        item_count: note.items,
        status_code: code as u32,
    };
    if let Err(e) = service.append_audit(event).await {
        tracing::error!(error = %e, rpc = %rpc, "cannot append the audit entry; failing the call");
        return Err(ServiceError::Internal(format!("cannot append to the audit log: {e}")).into());
    }
    result.map_err(|e| {
        tracing::info!(
            rpc = %rpc,
            party = who.as_ref().map_or("", |w| w.party.as_str()),
            code = ?e.code(),
            "refused: {}",
            renketsu_keys::names::audit_field(&e.to_string())
        );
        e.into()
    })
}

/// An audit entry as the wire carries it (ReadAuditLog of both services, SPEC.md §8.5).
pub fn audit_entry_to_wire(e: &renketsu_keys::audit::AuditEntry) -> v1::AuditEntry {
    v1::AuditEntry {
        sequence: e.sequence,
        unix_time_ms: e.event.unix_time_ms,
        actor_party: e.event.actor_party.clone(),
        role: e.event.role,
        rpc: e.event.rpc.clone(),
        project: e.event.project.clone(),
        recipe: e.event.recipe.clone(),
        epoch: e.event.epoch,
        item_count: e.event.item_count,
        status_code: e.event.status_code,
        prev_hash: e.prev_hash.to_vec(),
        entry_hash: e.entry_hash.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use renketsu_keys::lifecycle::{MockClock, Timestamp};

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Rpc {
        List,
        Fetch,
    }

    impl fmt::Display for Rpc {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Method for Rpc {
        fn path(self) -> String {
            format!("/test.Service/{self}")
        }
        fn roles(self) -> &'static [Role] {
            match self {
                Rpc::List => &[Role::Admin],
                Rpc::Fetch => &[Role::DataHolder, Role::Researcher],
            }
        }
        fn scope(self) -> Scope {
            match self {
                Rpc::List => Scope::Service,
                Rpc::Fetch => Scope::Project,
            }
        }
    }

    #[derive(Debug)]
    struct Fake {
        clock: MockClock,
        log: Mutex<Vec<AuditEvent>>,
        fail_audit: bool,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                clock: MockClock::new(Timestamp::from_unix_ms(1_000)),
                log: Mutex::new(Vec::new()),
                fail_audit: false,
            }
        }
        fn last(&self) -> AuditEvent {
            self.log.lock().unwrap().last().cloned().unwrap()
        }
    }

    impl RpcService for Fake {
        type Method = Rpc;
        type Member = String;
        fn clock(&self) -> &dyn Clock {
            &self.clock
        }
        async fn append_audit(&self, event: AuditEvent) -> Result<(), String> {
            if self.fail_audit {
                return Err("disk full".to_owned());
            }
            self.log.lock().unwrap().push(event);
            Ok(())
        }
        async fn check_member(
            &self,
            _rpc: Rpc,
            who: &PeerIdentity,
            project: &str,
        ) -> Result<String, ServiceError> {
            if project == "p" && who.party == "holder-a" {
                Ok(format!("{project}:{}", who.party))
            } else {
                Err(ServiceError::PermissionDenied(format!(
                    "{} is not part of {project:?}",
                    who.party
                )))
            }
        }
    }

    fn id(party: &str, role: Role) -> Result<PeerIdentity, ServiceError> {
        Ok(PeerIdentity {
            party: party.to_owned(),
            role,
        })
    }

    #[tokio::test]
    async fn refusals_are_audited_with_their_code() {
        let s = Fake::new();
        let unauth = Err(ServiceError::Unauthenticated("no certificate".to_owned()));
        let r = handle_as(
            &s,
            Rpc::List,
            unauth,
            (),
            AuditNote::default(),
            |_, ()| async { Ok::<_, ServiceError>(1) },
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
        let e = s.last();
        assert_eq!((e.actor_party.as_str(), e.role), ("", 0));
        assert_eq!(e.status_code, Code::Unauthenticated as u32);

        let r = handle_as(
            &s,
            Rpc::List,
            id("holder-a", Role::DataHolder),
            (),
            AuditNote::project("p"),
            |_, ()| async { Ok::<_, ServiceError>(1) },
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
        let e = s.last();
        assert_eq!(e.actor_party, "holder-a");
        assert_eq!(e.role, v1::Role::DataHolder as i32);
        assert_eq!(e.project, "p");
        assert_eq!(e.rpc, "/test.Service/List");
        assert_eq!(e.status_code, Code::PermissionDenied as u32);
        assert_eq!(s.log.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn project_calls_must_pass_the_membership_check() {
        let s = Fake::new();
        // A handler that forgets the check cannot succeed.
        let r = handle_as(
            &s,
            Rpc::Fetch,
            id("holder-a", Role::DataHolder),
            "p",
            AuditNote::default(),
            |_, _| async { Ok::<_, ServiceError>(()) },
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::Internal);
        assert_eq!(s.last().status_code, Code::Internal as u32);
        // A member passes, and the handler's note is what gets audited.
        let r = handle_as(
            &s,
            Rpc::Fetch,
            id("holder-a", Role::DataHolder),
            "p",
            AuditNote::default(),
            |call, project| async move {
                let m = call.member(project).await?;
                call.note(|n| n.items = 7);
                Ok::<_, ServiceError>(m)
            },
        )
        .await;
        assert_eq!(r.unwrap(), "p:holder-a");
        let e = s.last();
        assert_eq!(
            (e.project.as_str(), e.item_count, e.status_code),
            ("p", 7, 0)
        );
        assert_eq!(e.unix_time_ms, 1_000);
        // A non-member is refused, and the refusal names the project it asked for.
        let r = handle_as(
            &s,
            Rpc::Fetch,
            id("holder-b", Role::DataHolder),
            "q",
            AuditNote::default(),
            |call, project| async move { call.member(project).await },
        )
        .await;
        assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
        assert_eq!(s.last().project, "q");
    }

    #[tokio::test]
    async fn nothing_leaves_unaudited() {
        let mut s = Fake::new();
        s.fail_audit = true;
        let r = handle_as(
            &s,
            Rpc::List,
            id("admin", Role::Admin),
            (),
            AuditNote::default(),
            |_, ()| async { Ok::<_, ServiceError>(42) },
        )
        .await;
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("disk full"));
    }

    #[test]
    fn role_refusal_names_the_allowed_roles() {
        let who = id("r1", Role::LinkageUnit).unwrap();
        let e = check_role(Rpc::Fetch, &who).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert!(e.to_string().contains("data-holder or researcher"), "{e}");
        assert!(check_role(Rpc::List, &id("a", Role::Admin).unwrap()).is_ok());
    }
}
