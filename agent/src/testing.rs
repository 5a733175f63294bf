//! Fixtures for unit tests of the services and the pipeline: each is built from real parts
//! that need neither root nor a kernel (a config file, a journal in a
//! temporary directory, the enforcement policy in memory, session cgroups as
//! plain directories).

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::enforcement::{Enforcer, kernel::KernelPolicy};
use crate::identity::cgroup::CgroupFs;
use crate::journal::{
    Hub, HubConfig, Journal, Retention,
    counters::AgentCounters,
    publisher::{self, Publisher, Sinks},
};
use crate::live::LiveConfig;
use crate::metrics::Metrics;
use crate::output::JsonLines;
use crate::session::SessionManager;

/// Two agents: `coder` accepts sessions and kills on revocation off
/// (plain alerting); `gated` requires task approvals.
pub const AGENTS: &str = r#"
[[agent]]
name = "coder"
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["127.0.0.1:8080"]
  tools = ["/usr/bin/git"]

[[agent]]
name = "gated"
require_approval = true
  [agent.match]
  sessions = true
  [agent.scope]
  systems = ["10.0.0.0/8:443"]
"#;

/// The parts of a daemon that the services read, in `dir`.
pub struct Parts {
    pub live: Arc<LiveConfig>,
    pub enforcer: Arc<Enforcer>,
    pub hub: Hub,
    pub publisher: Publisher,
    pub counters: Arc<AgentCounters>,
    pub new_cgroups_tx: mpsc::UnboundedSender<(u64, String)>,
}

pub fn live(dir: &Path, config: &str) -> Arc<LiveConfig> {
    let path = dir.join("vigil.toml");
    std::fs::write(&path, config).unwrap();
    Arc::new(LiveConfig::load(&path).unwrap())
}

pub fn hub(dir: &Path) -> Hub {
    let journal =
        Journal::open(&dir.join("journal.redb"), "test-node", Retention::default()).unwrap();
    Hub::new(journal, HubConfig::default())
}

/// Everything, with the publisher running on its own thread (as in the
/// daemon); `publishing` is false for a publisher that was stopped.
pub async fn parts(dir: &Path, config: &str) -> Parts {
    let live = live(dir, config);
    let cgroups = CgroupFs::new(dir.join("cgroup"));
    let sessions = SessionManager::new(cgroups, "vigil").unwrap();
    let enforcer = Arc::new(Enforcer::load(
        KernelPolicy::in_memory(),
        sessions,
        &dir.join("state"),
    ));
    enforcer.configure(&live.current().scope).unwrap();
    let hub = hub(dir);
    let (publisher, queue) = Publisher::channel(publisher::QUEUE_BATCHES);
    let counters = Arc::new(AgentCounters::default());
    let running = publisher::spawn(
        queue,
        Sinks {
            hub: hub.clone(),
            counters: Arc::clone(&counters),
            metrics: Arc::new(Metrics::default()),
            output: JsonLines::none(),
        },
    )
    .unwrap();
    tokio::spawn(running);
    // Nobody resolves cgroups here; a send to a closed channel is ignored.
    let (new_cgroups_tx, _) = mpsc::unbounded_channel();
    Parts {
        live,
        enforcer,
        hub,
        publisher,
        counters,
        new_cgroups_tx,
    }
}
