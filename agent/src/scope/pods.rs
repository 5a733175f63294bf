//! The agents' `match.kubernetes` selectors, compiled with the scope.

use crate::config::{Config, KubeSelector};
use crate::event::Workload;

/// Every agent's pod selector, in config order.
#[derive(Clone, Debug, Default)]
pub struct PodSelectors {
    /// `(agent index, selector)`.
    selectors: Vec<(usize, KubeSelector)>,
}

impl PodSelectors {
    #[must_use]
    pub fn compile(config: &Config) -> Self {
        let selectors = config
            .agents
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let sel = a.matcher.as_ref()?.kubernetes.clone()?;
                Some((i, sel))
            })
            .collect();
        Self { selectors }
    }

    /// Whether any agent is selected by pod attributes.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// Index of the first agent whose selector chooses this workload; none
    /// until its pod metadata is known.
    #[must_use]
    pub fn first_match(&self, w: &Workload) -> Option<usize> {
        let (Some(ns), Some(sa)) = (w.namespace.as_deref(), w.service_account.as_deref()) else {
            return None;
        };
        self.selectors
            .iter()
            .find(|(_, s)| s.matches(ns, sa, &w.labels))
            .map(|(i, _)| *i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml_str(
            r#"
[[agent]]
name = "sessions-only"
  [agent.match]
  sessions = true
[[agent]]
name = "coder"
  [agent.match]
  kubernetes = { namespace = "agents", labels = { "app" = "code-assistant" } }
[[agent]]
name = "any-in-agents"
  [agent.match]
  kubernetes = { namespace = "agents" }
[[agent]]
name = "by-account"
  [agent.match]
  kubernetes = { service_account = "analyst" }
"#,
            "t",
        )
        .unwrap()
    }

    fn pod(ns: &str, sa: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            namespace: Some(ns.into()),
            service_account: Some(sa.into()),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Workload::default()
        }
    }

    #[test]
    fn first_selector_in_config_order_wins() {
        let s = PodSelectors::compile(&config());
        assert!(!s.is_empty());
        assert_eq!(
            s.first_match(&pod("agents", "default", &[("app", "code-assistant")])),
            Some(1)
        );
        assert_eq!(
            s.first_match(&pod("agents", "default", &[("app", "other")])),
            Some(2)
        );
        assert_eq!(s.first_match(&pod("data", "analyst", &[])), Some(3));
        assert_eq!(s.first_match(&pod("data", "default", &[])), None);
        // Pod metadata not known yet: nothing matches.
        assert_eq!(s.first_match(&Workload::default()), None);
        assert!(PodSelectors::compile(&Config::default()).is_empty());
    }
}
