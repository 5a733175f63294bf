//! `GovernanceService`: agents, sessions, revocation and task approvals.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{pb, server::local_peer};
use crate::{
    daemon::{Shared, daemon_event},
    event::{Identity, Payload, SessionStart},
    session::SessionError,
};

pub struct Governance {
    shared: Arc<Shared>,
}

impl Governance {
    pub const fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn session_status(e: SessionError) -> Status {
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
        Err(Status::unimplemented("ListAgents"))
    }

    async fn get_agent(
        &self,
        _req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        Err(Status::unimplemented("GetAgent"))
    }

    async fn revoke(
        &self,
        _req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("Revoke"))
    }

    async fn restore(
        &self,
        _req: Request<pb::RestoreRequest>,
    ) -> Result<Response<pb::RestoreResponse>, Status> {
        Err(Status::unimplemented("Restore"))
    }

    async fn approve_task(
        &self,
        _req: Request<pb::ApproveTaskRequest>,
    ) -> Result<Response<pb::ApproveTaskResponse>, Status> {
        Err(Status::unimplemented("ApproveTask"))
    }

    async fn end_task(
        &self,
        _req: Request<pb::EndTaskRequest>,
    ) -> Result<Response<pb::EndTaskResponse>, Status> {
        Err(Status::unimplemented("EndTask"))
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
        let r = req.into_inner();
        if r.agent.is_empty() {
            return Err(Status::invalid_argument("agent: required"));
        }
        if r.pid == 0 {
            return Err(Status::invalid_argument("pid: required"));
        }
        // Moving someone else's process into a governed session is a root-only act.
        if peer.uid != 0 && peer.pid != Some(r.pid) {
            return Err(Status::permission_denied(format!(
                "{peer} may only place its own process in a session, not pid {}",
                r.pid
            )));
        }
        {
            let loaded = self.shared.live.current();
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
        let session = (!r.session.is_empty()).then_some(r.session.as_str());
        let info = self
            .shared
            .sessions
            .start(&r.agent, session, r.pid)
            .map_err(session_status)?;
        let _ = self
            .shared
            .new_cgroups
            .send((info.cgroup_id, info.cgroup.clone()));
        tracing::info!(
            "session {} of agent {} started for pid {} by {peer}",
            info.session,
            info.agent,
            r.pid
        );
        self.shared.emit(daemon_event(
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

fn declared(scope: &crate::scope::Scope) -> String {
    let names: Vec<String> = scope.agents().map(|a| format!("{:?}", a.name)).collect();
    if names.is_empty() {
        "no agents".to_owned()
    } else {
        names.join(", ")
    }
}
