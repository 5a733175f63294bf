//! A governance request body as a client sends it (`Revoke`, `Restore`,
//! `ApproveTask`, `EndTask`, `StartSession`; the first byte picks which):
//! decoded, checked by its `TryFrom` (or refused with a message), and an
//! approval's narrower scope compiled against a node config as the
//! enforcer does before it touches the kernel.

#![no_main]

use std::sync::LazyLock;
use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tonic::Status;
use vigil::api::requests::{
    MAX_TTL, RequestError, SessionStart, TargetRequest, TaskApproval, TaskEnd,
};
use vigil::config::Config;
use vigil::enforcement::{Grant, narrowed_scope};
use vigil::wire::pb;

/// Two agents, one under task approvals, with data classes to narrow to.
const NODE: &str = r#"
[[agent]]
name = "coder"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["api.example.com:443", "udp://127.0.0.53:53"]
  tools = ["/usr/bin/git", "/usr/bin/python3*"]
  data = ["workspace", "scratch"]
  identities = ["git-token"]

[[agent]]
name = "reviewer"
  [agent.match]
  sessions = true
  [agent.scope]
  tools = ["/usr/bin/*"]

[data.workspace]
read = ["/srv/workspace/**"]
write = ["/srv/workspace/**"]

[data.scratch]
read = ["/tmp/**"]

[identity.git-token]
files = ["/var/run/secrets/git/token"]
"#;

static CONFIG: LazyLock<Config> =
    LazyLock::new(|| Config::from_toml_str(NODE, "node.toml").expect("the node config is valid"));

/// A refusal is an `INVALID_ARGUMENT` that says what is wrong.
fn refused(e: RequestError) {
    let status = Status::from(e);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(!status.message().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(r) = pb::RevokeRequest::decode(body) {
                match TargetRequest::try_from(r) {
                    Ok(t) => assert!(!t.agent.is_empty() && t.reason == t.reason.trim()),
                    Err(e) => refused(e),
                }
            }
        }
        1 => {
            if let Ok(r) = pb::RestoreRequest::decode(body) {
                match TargetRequest::try_from(r) {
                    Ok(t) => assert!(!t.reason.is_empty()),
                    Err(e) => refused(e),
                }
            }
        }
        2 => {
            let Ok(r) = pb::ApproveTaskRequest::decode(body) else {
                return;
            };
            let a = match TaskApproval::try_from(r) {
                Ok(a) => a,
                Err(e) => return refused(e),
            };
            assert!(!a.ttl.is_zero() && a.ttl <= MAX_TTL);
            // Every accepted ttl has an expiry on both clocks.
            assert!(SystemTime::now().checked_add(a.ttl).is_some());
            let scope = a.scope.unwrap_or_default();
            let grant = Grant {
                task: a.task,
                purpose: a.purpose,
                by: "fuzz".into(),
                expires: SystemTime::now(),
                expires_boot_ns: 0,
                systems: scope.systems,
                tools: scope.tools,
                data: scope.data,
            };
            if let Err(e) = narrowed_scope(&CONFIG, &a.agent, &grant) {
                assert!(!e.to_string().is_empty());
            }
        }
        3 => {
            if let Ok(r) = pb::EndTaskRequest::decode(body) {
                match TaskEnd::try_from(r) {
                    Ok(t) => assert!(!t.agent.is_empty()),
                    Err(e) => refused(e),
                }
            }
        }
        _ => {
            if let Ok(r) = pb::StartSessionRequest::decode(body) {
                match SessionStart::try_from(r) {
                    Ok(s) => {
                        assert!(s.pid != 0);
                        if let Some(name) = s.session {
                            assert!(vigil::session::validate_name("session", &name).is_ok());
                        }
                    }
                    Err(e) => refused(e),
                }
            }
        }
    }
});
