//! `GovernanceService`: agents, sessions, revocation and task approvals.

use std::{sync::Arc, time::SystemTime};

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{
    agents::Sources,
    auth::Caller,
    requests::{SessionStart as SessionStartRequest, TargetRequest, TaskApproval, TaskEnd},
    server::local_peer,
};
use crate::{
    config::Role,
    enforcement::{Cause, EnforceError, Enforcer, Grant, state::Target},
    event::{Event, Identity, Payload, SessionStart, TaskApproved, TaskEnded},
    journal::{counters::AgentCounters, publisher::Publisher},
    live::LiveConfig,
    scope::{AgentInfo, Scope},
    session::SessionError,
    wire::pb,
};

/// The governance service: built from what it reads and changes.
#[derive(Clone)]
pub struct Governance {
    live: Arc<LiveConfig>,
    enforcer: Arc<Enforcer>,
    /// Journals the audit events of every change.
    publisher: Publisher,
    counters: Arc<AgentCounters>,
    /// New session cgroups, for the pipeline to resolve at once.
    new_cgroups: mpsc::UnboundedSender<(u64, String)>,
}

impl Governance {
    #[must_use]
    pub const fn new(
        live: Arc<LiveConfig>,
        enforcer: Arc<Enforcer>,
        publisher: Publisher,
        counters: Arc<AgentCounters>,
        new_cgroups: mpsc::UnboundedSender<(u64, String)>,
    ) -> Self {
        Self {
            live,
            enforcer,
            publisher,
            counters,
            new_cgroups,
        }
    }

    fn sources(&self) -> Sources<'_> {
        Sources {
            sessions: self.enforcer.sessions(),
            revocations: self.enforcer.revocations(),
            counters: &self.counters,
        }
    }

    /// Checks a revoke or restore request against the live scope and the
    /// sessions, and names what it applies to.
    fn target(&self, r: &TargetRequest) -> Result<Target, Status> {
        let (agent, session) = (r.agent.as_str(), r.session.as_str());
        find_agent(&self.live.current().scope, agent)?;
        if !session.is_empty() {
            match self.enforcer.sessions().get(session) {
                Some(s) if s.agent == agent => {}
                Some(s) => {
                    return Err(Status::not_found(format!(
                        "session {session:?} belongs to agent {:?}, not {agent:?}",
                        s.agent
                    )));
                }
                // A session that ended may still be revoked, so it can be restored.
                None if self
                    .enforcer
                    .revocations()
                    .get(&Target::new(agent, session))
                    .is_some() => {}
                None => {
                    return Err(Status::not_found(format!(
                        "agent {agent:?} has no active session {session:?}"
                    )));
                }
            }
        }
        Ok(Target::new(agent, session))
    }

    /// Journals an audit event and returns its sequence.
    async fn journal(&self, event: Event) -> Result<u64, Status> {
        let published =
            self.publisher.publish(vec![event]).await.map_err(|e| {
                Status::unavailable(format!("the audit event was not journaled: {e}"))
            })?;
        Ok(published.first().map_or(0, |e| e.seq))
    }
}

/// The caller of a governance action; the layer has already checked the
/// role, this keeps a handler safe if it is ever served without it.
fn operator<T>(req: &Request<T>) -> Result<Caller, Status> {
    let caller = Caller::of(req)?;
    if caller.role() < Role::Operator {
        return Err(Status::permission_denied(format!(
            "{caller} has the {} role; this needs operator",
            caller.role()
        )));
    }
    Ok(caller)
}

fn find_agent<'a>(scope: &'a Scope, name: &str) -> Result<&'a AgentInfo, Status> {
    scope
        .agent_id(name)
        .map(|id| scope.agent(id))
        .ok_or_else(|| {
            Status::not_found(format!(
                "unknown agent {name:?}: the node config declares {}",
                declared(scope)
            ))
        })
}

fn session_status(e: &SessionError) -> Status {
    match e {
        SessionError::InvalidName { .. } => Status::invalid_argument(e.to_string()),
        SessionError::Exists(_) => Status::already_exists(e.to_string()),
        SessionError::Cgroup(_) | SessionError::Random(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::governance_service_server::GovernanceService for Governance {
    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let loaded = self.live.current();
        let sources = self.sources();
        Ok(Response::new(pb::ListAgentsResponse {
            agents: loaded.scope.agents().map(|a| sources.agent(a)).collect(),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name: required"));
        }
        let loaded = self.live.current();
        let info = find_agent(&loaded.scope, &name)?;
        Ok(Response::new(pb::GetAgentResponse {
            agent: Some(self.sources().agent(info)),
        }))
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = operator(&req)?;
        let r = TargetRequest::try_from(req.into_inner())?;
        let target = self.target(&r)?;
        let reason = r.reason;
        // The kernel maps are updated before this returns: the first syscall
        // after the response is already refused.
        let started_ns = crate::enforcement::boot_now_ns();
        let (revoked, sequence) = self
            .enforcer
            .revoke_audited(
                target.clone(),
                Cause::decided(reason.clone()),
                caller.by(),
                &self.publisher,
            )
            .await
            .map_err(|e| enforce_status(&e))?;
        // From the request to the kernel maps, not counting the journal
        // commit of the audit event that follows.
        let latency_ns = revoked.applied_ns.saturating_sub(started_ns);
        tracing::warn!("{target} revoked by {caller}: {reason:?} (event {sequence})");
        Ok(Response::new(pb::RevokeResponse {
            sequence,
            latency_ns,
        }))
    }

    async fn restore(
        &self,
        req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        let caller = operator(&req)?;
        let r = TargetRequest::try_from(req.into_inner())?;
        let target = self.target(&r)?;
        let reason = r.reason;
        let (_, sequence) = self
            .enforcer
            .restore_audited(&target, &reason, caller.by(), &self.publisher)
            .await
            .map_err(|e| enforce_status(&e))?;
        tracing::warn!("{target} restored by {caller}: {reason:?} (event {sequence})");
        Ok(Response::new(pb::RestoreResponse { sequence }))
    }

    async fn approve_task(
        &self,
        req: Request<pb::ApproveTaskRequest>,
    ) -> Result<Response<pb::ApproveTaskResponse>, Status> {
        let caller = operator(&req)?;
        let r = TaskApproval::try_from(req.into_inner())?;
        let (ttl, scope) = (r.ttl, r.scope);
        let loaded = self.live.current();
        find_agent(&loaded.scope, &r.agent)?;
        let grant = Grant {
            task: r.task,
            purpose: r.purpose,
            by: caller.by(),
            expires: SystemTime::now(),
            expires_boot_ns: 0,
            systems: scope
                .as_ref()
                .map(|s| s.systems.clone())
                .unwrap_or_default(),
            tools: scope.as_ref().map(|s| s.tools.clone()).unwrap_or_default(),
            data: scope.as_ref().map(|s| s.data.clone()).unwrap_or_default(),
        };
        let grant = self
            .enforcer
            .approve(&loaded.config, &loaded.scope, &r.agent, grant, ttl)
            .map_err(|e| enforce_status(&e))?;
        let expires = grant.expires;
        let event = Event::daemon(
            Identity {
                agent: Some(r.agent.clone()),
                task: Some(grant.task.clone()),
                ..Identity::default()
            },
            Payload::TaskApproved(TaskApproved {
                agent: r.agent.clone(),
                task: grant.task.clone(),
                purpose: grant.purpose.clone(),
                expires,
                scope: scope.clone(),
                by: grant.by.clone(),
            }),
        );
        let sequence = self.journal(event).await?;
        tracing::info!(
            "task {} of agent {} approved by {caller} for {ttl:?}: {:?}",
            grant.task,
            r.agent,
            grant.purpose
        );
        Ok(Response::new(pb::ApproveTaskResponse {
            grant: Some(pb::TaskGrant {
                agent: r.agent,
                task: grant.task,
                purpose: grant.purpose,
                expires_at: Some(grant.expires.into()),
                scope: scope.map(|s| pb::TaskScope {
                    systems: s.systems,
                    tools: s.tools,
                    data: s.data,
                }),
                approved_by: grant.by,
            }),
            sequence,
        }))
    }

    async fn end_task(
        &self,
        req: Request<pb::EndTaskRequest>,
    ) -> Result<Response<pb::EndTaskResponse>, Status> {
        let caller = operator(&req)?;
        let r = TaskEnd::try_from(req.into_inner())?;
        find_agent(&self.live.current().scope, &r.agent)?;
        let grant = self
            .enforcer
            .end_task(&r.agent, &r.task)
            .map_err(|e| enforce_status(&e))?;
        let event = Event::daemon(
            Identity {
                agent: Some(r.agent.clone()),
                task: Some(grant.task.clone()),
                ..Identity::default()
            },
            Payload::TaskEnded(TaskEnded {
                agent: r.agent.clone(),
                task: grant.task.clone(),
                reason: "ended".to_owned(),
                by: caller.by(),
            }),
        );
        let sequence = self.journal(event).await?;
        tracing::info!("task {} of agent {} ended by {caller}", grant.task, r.agent);
        Ok(Response::new(pb::EndTaskResponse { sequence }))
    }

    async fn start_session(
        &self,
        req: Request<pb::StartSessionRequest>,
    ) -> Result<Response<pb::StartSessionResponse>, Status> {
        let Some(peer) = local_peer(&req) else {
            return Err(Status::permission_denied(
                "sessions can only be started over the local socket",
            ));
        };
        let r = SessionStartRequest::try_from(req.into_inner())?;
        // Moving someone else's process into a governed session is a root-only act.
        if peer.uid != 0 && peer.pid != Some(r.pid) {
            return Err(Status::permission_denied(format!(
                "{peer} may only place its own process in a session, not pid {}",
                r.pid
            )));
        }
        {
            let loaded = self.live.current();
            let Some(id) = loaded.scope.agent_id(&r.agent) else {
                return Err(Status::not_found(format!(
                    "unknown agent {:?}: the node config declares {}",
                    r.agent,
                    declared(&loaded.scope)
                )));
            };
            if !loaded.scope.agent(id).sessions {
                return Err(Status::failed_precondition(format!(
                    "agent {:?} does not accept sessions (set match.sessions = true)",
                    r.agent
                )));
            }
        }
        let info = self
            .enforcer
            .sessions()
            .start(&r.agent, r.session.as_deref(), r.pid)
            .map_err(|e| session_status(&e))?;
        let _ = self.new_cgroups.send((info.cgroup_id, info.cgroup.clone()));
        tracing::info!(
            "session {} of agent {} started for pid {} by {peer}",
            info.session,
            info.agent,
            r.pid
        );
        self.publisher.emit(Event::daemon(
            Identity {
                agent: Some(info.agent.clone()),
                session: Some(info.session.clone()),
                cgroup_id: info.cgroup_id,
                cgroup: Some(info.cgroup.clone()),
                ..Identity::default()
            },
            Payload::SessionStart(SessionStart {
                cgroup: info.cgroup.clone(),
                requested_by_pid: peer.pid.unwrap_or(0),
            }),
        ));
        Ok(Response::new(pb::StartSessionResponse {
            session: info.session.clone(),
            cgroup_path: info.cgroup.clone(),
        }))
    }
}

/// Status codes for enforcement errors: what the caller asked cannot apply
/// (`FailedPrecondition`), names nothing that exists (`NotFound`), or the
/// kernel refused (`Internal`).
fn enforce_status(e: &EnforceError) -> Status {
    use EnforceError as E;
    match e {
        E::State(_) | E::NoTask(_) | E::OtherTask { .. } | E::NoApprovalNeeded(_) => {
            Status::failed_precondition(e.to_string())
        }
        E::TaskScope(_) => Status::invalid_argument(e.to_string()),
        E::UnknownAgent(_) | E::UnknownSession { .. } => Status::not_found(e.to_string()),
        E::Audit(_) => Status::unavailable(e.to_string()),
        E::Kernel(_) | E::Cgroup(_) | E::Session(_) => Status::internal(e.to_string()),
    }
}

fn declared(scope: &Scope) -> String {
    let names: Vec<String> = scope.agents().map(|a| format!("{:?}", a.name)).collect();
    if names.is_empty() {
        "no agents".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;
    use vigil_common::policy;

    use super::*;
    use crate::api::server::Peer;
    use crate::testing::{AGENTS, Parts, parts};
    use crate::wire::pb::governance_service_server::GovernanceService as _;

    fn governance(p: &Parts) -> Governance {
        Governance::new(
            Arc::clone(&p.live),
            Arc::clone(&p.enforcer),
            p.publisher.clone(),
            Arc::clone(&p.counters),
            p.new_cgroups_tx.clone(),
        )
    }

    fn as_root<T>(msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.extensions_mut().insert(Caller::Local(Some(Peer {
            pid: Some(4242),
            uid: 0,
        })));
        req
    }

    fn revoke(agent: &str, session: &str, reason: &str) -> pb::RevokeRequest {
        pb::RevokeRequest {
            agent: agent.into(),
            session: session.into(),
            reason: reason.into(),
        }
    }

    fn revoked_in_kernel(p: &Parts, agent: &str) -> bool {
        let (id, _) = p.enforcer.sessions().agent_dir(agent).unwrap();
        p.enforcer.kernel().get(id).flags & policy::REVOKED != 0
    }

    fn journaled(p: &Parts) -> Vec<pb::Event> {
        p.hub.reader().read_after(0, 100).unwrap()
    }

    #[tokio::test]
    async fn revoke_takes_effect_in_the_kernel_and_is_on_record() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), AGENTS).await;
        let g = governance(&p);
        let r = g
            .revoke(as_root(revoke("coder", "", "leaked a token")))
            .await
            .unwrap()
            .into_inner();
        assert!(r.sequence > 0);
        assert!(revoked_in_kernel(&p, "coder"));
        let events = journaled(&p);
        let Some(pb::event::Payload::Revocation(rev)) = &events[0].payload else {
            panic!("{events:?}");
        };
        assert_eq!(
            (rev.agent.as_str(), rev.reason.as_str()),
            ("coder", "leaked a token")
        );
        assert!(rev.by.contains("uid 0 pid 4242"), "{}", rev.by);
        // A second revocation names the standing one.
        let again = g
            .revoke(as_root(revoke("coder", "", "twice")))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again}");
        assert!(again.message().contains("leaked a token"), "{again}");
        // Restore lifts it, on record too.
        g.restore(as_root(pb::RestoreRequest {
            agent: "coder".into(),
            session: String::new(),
            reason: "rotated".into(),
        }))
        .await
        .unwrap();
        assert!(!revoked_in_kernel(&p, "coder"));
        assert!(matches!(
            journaled(&p)[1].payload,
            Some(pb::event::Payload::Restore(_))
        ));
    }

    #[tokio::test]
    async fn a_revocation_that_cannot_be_journaled_does_not_stand() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), AGENTS).await;
        let g = governance(&p);
        p.publisher.stop().await;
        let err = g
            .revoke(as_root(revoke("coder", "", "no journal")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err}");
        assert!(!revoked_in_kernel(&p, "coder"));
        assert!(p.enforcer.revocations().list().is_empty());
    }

    #[tokio::test]
    async fn bad_requests_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), AGENTS).await;
        let g = governance(&p);
        let cases = [
            (
                revoke("", "", "r"),
                Code::InvalidArgument,
                "agent: required",
            ),
            (
                revoke("coder", "", "  "),
                Code::InvalidArgument,
                "reason: required",
            ),
            (
                revoke("nobody", "", "r"),
                Code::NotFound,
                "unknown agent \"nobody\": the node config declares \"coder\", \"gated\"",
            ),
            (
                revoke("coder", "s-missing", "r"),
                Code::NotFound,
                "agent \"coder\" has no active session \"s-missing\"",
            ),
        ];
        for (req, code, words) in cases {
            let err = g.revoke(as_root(req)).await.unwrap_err();
            assert_eq!(err.code(), code, "{err}");
            assert!(err.message().contains(words), "{err}");
        }
        // Nothing was changed or journaled by any of them.
        assert!(p.enforcer.revocations().list().is_empty());
        assert!(journaled(&p).is_empty());
    }

    #[tokio::test]
    async fn unauthenticated_and_reader_callers_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), AGENTS).await;
        let g = governance(&p);
        let err = g
            .revoke(Request::new(revoke("coder", "", "r")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        let mut req = Request::new(revoke("coder", "", "r"));
        req.extensions_mut().insert(Caller::Insecure { addr: None });
        let err = g.revoke(req).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        // Sessions start only over the local socket, with the caller's pid.
        let err = g
            .start_session(as_root(pb::StartSessionRequest {
                agent: "coder".into(),
                session: String::new(),
                pid: 1,
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(!revoked_in_kernel(&p, "coder"));
    }

    #[tokio::test]
    async fn task_approvals_open_and_close_the_kernel_window() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), AGENTS).await;
        let g = governance(&p);
        let approve = |agent: &str, ttl: u64| pb::ApproveTaskRequest {
            agent: agent.into(),
            task: "t-1".into(),
            purpose: "release".into(),
            ttl: Some(prost_types::Duration {
                seconds: i64::try_from(ttl).unwrap(),
                nanos: 0,
            }),
            scope: None,
        };
        let err = g
            .approve_task(as_root(approve("coder", 60)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        let err = g
            .approve_task(as_root(approve("gated", 0)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        let r = g
            .approve_task(as_root(approve("gated", 60)))
            .await
            .unwrap()
            .into_inner();
        assert!(r.sequence > 0);
        let (id, _) = p.enforcer.sessions().agent_dir("gated").unwrap();
        let window = p.enforcer.kernel().get(id).grant_expires_ns;
        assert!(window > crate::enforcement::boot_now_ns());
        assert_eq!(p.enforcer.active_task("gated").as_deref(), Some("t-1"));
        let err = g
            .end_task(as_root(pb::EndTaskRequest {
                agent: "gated".into(),
                task: "t-2".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
        g.end_task(as_root(pb::EndTaskRequest {
            agent: "gated".into(),
            task: "t-1".into(),
        }))
        .await
        .unwrap();
        assert_eq!(p.enforcer.kernel().get(id).grant_expires_ns, 0);
    }
}
