//! A real daemon on a simulated Kubernetes node. Container-style
//! cgroups (containerd and CRI-O naming) hold real processes; a test API
//! server serves the node's pods over the list and watch protocol.

// Paths are written into TOML with `{:?}` (a quoted, escaped string), and
// small helpers sit next to the steps that use them.
#![allow(clippy::unnecessary_debug_formatting, clippy::items_after_statements)]

use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::kube::{
    ContainerCgroup, FakeApiServer, PodSpec, Runtime, SimNode, count, free_port, scrape, serial,
};
use vigil_tests::{CODER_AGENT, Daemon, kernel_available};

const NODE: &str = "node-a";

/// `[kubernetes]` pointing at the test API server, and `[metrics]`.
fn kube_sections(api: &FakeApiServer, wait: &str, metrics_port: u16) -> String {
    format!(
        r#"
[kubernetes]
enabled = true
node_name = "{NODE}"
trust_domain = "test.example"
api_server = "{url}"
metadata_wait = "{wait}"

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#,
        url = api.url()
    )
}

/// Agents chosen by pod attributes, plus `coder` for sessions (settle).
const POD_AGENTS: &str = r#"
[[agent]]
name = "assistant"
  [agent.match]
  kubernetes = { namespace = "agents", labels = { "app" = "code-assistant" } }
  [agent.scope]
  tools = ["/**"]
  data = ["everything"]

[[agent]]
name = "analyst"
  [agent.match]
  kubernetes = { service_account = "analyst" }
  [agent.scope]
  tools = ["/**"]
  data = ["everything"]
"#;

fn has_arg(e: &Value, needle: &str) -> bool {
    e["kind"] == "exec"
        && e["argv"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == needle))
}

fn of_container<'a>(events: &'a [Value], cg: &ContainerCgroup) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["identity"]["workload"]["container_id"] == cg.container_id.as_str())
        .collect()
}

/// Runs `/bin/echo MARKER` in the container until the daemon reports one
/// (the cgroup is watched at the daemon's next walk); returns that exec.
fn exec_seen(d: &Daemon, cg: &ContainerCgroup, marker: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut n = 0;
    loop {
        let m = format!("{marker}-{n}");
        let out = cg.run(&["/bin/echo", &m]);
        assert!(out.status.success(), "{out:?}");
        let until = Instant::now() + Duration::from_millis(700);
        while Instant::now() < until {
            if let Some(e) = d.events().into_iter().find(|e| {
                e["kind"] == "exec"
                    && e["argv"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|x| x.as_str().is_some_and(|s| s.starts_with(marker)))
                    })
            }) {
                return e;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            Instant::now() < deadline,
            "no exec of {marker} in {} after 20 s; events:\n{}\ndaemon log:\n{}",
            cg.rel,
            d.dump(),
            d.log()
        );
        n += 1;
    }
}

/// Polls `/metrics` until `series` satisfies `ok`; returns its value.
fn metric_until(port: u16, series: &str, ok: impl Fn(u64) -> bool, d: &Daemon) -> u64 {
    let addr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(addr).unwrap_or_default();
        if let Some(v) = count(&text, series).filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached the expected value; last scrape:\n{text}\ndaemon log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn warnings(d: &Daemon) -> Vec<String> {
    d.api().status().expect("status").warnings
}

fn wait_warnings(d: &Daemon, what: &str, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let w = warnings(d);
        if ok(&w) {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "status warnings never showed {what}: {w:?}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn match_cgroups_watches_container_cgroups() {
    if !kernel_available() {
        return;
    }
    let _serial = serial();
    let node = SimNode::new();
    let port = free_port();
    let d = Daemon::start(&format!(
        r#"
[kubernetes]
enabled = false

[metrics]
listen = "127.0.0.1:{port}"

[[agent]]
name = "globbed"
  [agent.match]
  cgroups = ["{top}/kubepods.slice/**/cri-containerd-*.scope"]
  [agent.scope]
  tools = ["/**"]
  data = ["everything"]
{CODER_AGENT}"#,
        top = node.top_rel
    ));
    let cg = node.container(Runtime::Containerd);
    let crio = node.container(Runtime::Crio);
    let e = exec_seen(&d, &cg, "glob-marker");
    let id = &e["identity"];
    assert_eq!(id["agent"], "globbed", "{e}");
    assert_eq!(id["cgroup"], cg.rel.as_str(), "{e}");
    assert!(id.get("session").is_none(), "{e}");
    let w = &id["workload"];
    assert_eq!(w["runtime"], "containerd", "{e}");
    assert_eq!(w["container_id"], cg.container_id.as_str(), "{e}");
    assert_eq!(w["pod_uid"], cg.pod_uid.as_str(), "{e}");
    assert!(
        w.get("pod_name").is_none(),
        "no API server, no pod name: {e}"
    );
    metric_until(port, "vigil_watched_cgroups", |v| v == 1, &d);

    // A CRI-O container, which the glob does not cover, is not watched.
    let out = crio.run(&["/bin/echo", "crio-unwatched"]);
    assert!(out.status.success());
    d.settle();
    let events = d.events();
    assert!(
        of_container(&events, &crio).is_empty()
            && !events.iter().any(|e| has_arg(e, "crio-unwatched")),
        "the CRI-O container was reported:\n{}",
        d.dump()
    );
    // A removed container cgroup is unwatched at the next walk.
    drop(cg);
    metric_until(port, "vigil_watched_cgroups", |v| v == 0, &d);
}

#[test]
fn pods_give_identity_and_selectors_choose_the_agent() {
    if !kernel_available() {
        return;
    }
    let _serial = serial();
    let node = SimNode::new();
    let api = FakeApiServer::start();
    let assistant = node.container(Runtime::Containerd);
    let analyst = node.container(Runtime::Crio);
    let web = node.container(Runtime::Containerd);
    let other_node = node.container(Runtime::Containerd);
    let labels = [("app", "code-assistant"), ("team", "dev")];
    api.apply(PodSpec::for_cgroup(
        &assistant,
        NODE,
        "assistant-0",
        "agents",
        "default",
        &labels,
        true,
    ));
    // The kubelet has not reported the analyst's container yet: found by pod UID.
    api.apply(PodSpec::for_cgroup(
        &analyst,
        NODE,
        "analyst-0",
        "data",
        "analyst",
        &[],
        false,
    ));
    api.apply(PodSpec::for_cgroup(
        &web,
        NODE,
        "web-0",
        "web",
        "default",
        &[],
        true,
    ));
    // Would be selected, but runs on another node: never listed for this one.
    api.apply(PodSpec::for_cgroup(
        &other_node,
        "node-b",
        "assistant-b",
        "agents",
        "default",
        &labels,
        true,
    ));
    let port = free_port();
    let d = Daemon::start(&format!(
        "{}{POD_AGENTS}{CODER_AGENT}",
        kube_sections(&api, "2s", port)
    ));
    metric_until(port, "vigil_kubernetes_api_up", |v| v == 1, &d);
    metric_until(port, "vigil_kubernetes_pods", |v| v == 3, &d);

    let e = exec_seen(&d, &assistant, "pod-a");
    let id = &e["identity"];
    assert_eq!(id["agent"], "assistant", "{e}");
    let w = &id["workload"];
    assert_eq!(w["runtime"], "containerd", "{e}");
    assert_eq!(w["container_id"], assistant.container_id.as_str(), "{e}");
    assert_eq!(w["pod_uid"], assistant.pod_uid.as_str(), "{e}");
    assert_eq!(w["pod_name"], "assistant-0", "{e}");
    assert_eq!(w["namespace"], "agents", "{e}");
    assert_eq!(w["service_account"], "default", "{e}");
    assert_eq!(w["container_name"], "main", "{e}");
    assert_eq!(w["labels"]["app"], "code-assistant", "{e}");
    assert_eq!(
        w["spiffe_id"], "spiffe://test.example/ns/agents/sa/default",
        "{e}"
    );

    let e = exec_seen(&d, &analyst, "pod-b");
    let id = &e["identity"];
    assert_eq!(id["agent"], "analyst", "{e}");
    let w = &id["workload"];
    assert_eq!(w["runtime"], "crio", "{e}");
    assert_eq!(w["pod_name"], "analyst-0", "{e}");
    assert_eq!(w["namespace"], "data", "{e}");
    assert_eq!(
        w["spiffe_id"], "spiffe://test.example/ns/data/sa/analyst",
        "{e}"
    );
    assert!(w.get("container_name").is_none(), "not reported yet: {e}");

    // A pod no agent selects is not reported, and neither is the other
    // node's pod attributed to anyone.
    for n in 0..3 {
        assert!(
            web.run(&["/bin/echo", &format!("pod-c-{n}")])
                .status
                .success()
        );
        assert!(
            other_node
                .run(&["/bin/echo", &format!("pod-other-{n}")])
                .status
                .success()
        );
    }
    std::thread::sleep(Duration::from_millis(2500));
    d.settle();
    let events = d.events();
    assert!(
        of_container(&events, &web).is_empty(),
        "events of an unselected pod:\n{}",
        d.dump()
    );
    for e in of_container(&events, &other_node) {
        assert!(e["identity"].get("agent").is_none(), "{e}");
        assert!(e["identity"]["workload"].get("pod_name").is_none(), "{e}");
    }
    // Only this node's pods were asked for.
    let requests = api.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert!(
            r.contains("fieldSelector=spec.nodeName%3Dnode-a"),
            "request without this node's field selector: {r}"
        );
    }
}

#[test]
fn a_pod_that_appears_after_its_first_events_is_attributed() {
    if !kernel_available() {
        return;
    }
    let _serial = serial();
    let node = SimNode::new();
    let api = FakeApiServer::start();
    let cg = node.container(Runtime::Containerd);
    let port = free_port();
    let d = Daemon::start(&format!(
        "{}{POD_AGENTS}{CODER_AGENT}",
        kube_sections(&api, "40s", port)
    ));
    metric_until(port, "vigil_kubernetes_api_up", |v| v == 1, &d);
    // Its pod is unknown, yet the container is watched (from the daemon's
    // next walk on) and its events wait for the pod.
    let addr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = cg.run(&["/bin/echo", "before-the-pod"]);
        assert!(out.status.success());
        std::thread::sleep(Duration::from_millis(300));
        let text = scrape(addr).unwrap_or_default();
        if count(&text, "vigil_kubernetes_held_events").is_some_and(|n| n >= 1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing held after 20 s:\n{text}\n{}",
            d.log()
        );
    }
    d.settle();
    assert!(
        !d.events().iter().any(|e| has_arg(e, "before-the-pod")),
        "the event went out before its pod was known:\n{}",
        d.dump()
    );
    api.apply(PodSpec::for_cgroup(
        &cg,
        NODE,
        "late-0",
        "agents",
        "coder",
        &[("app", "code-assistant")],
        false,
    ));
    let e = d.wait_for("the held exec", |e| has_arg(e, "before-the-pod"));
    assert_eq!(e["identity"]["agent"], "assistant", "{e}");
    assert_eq!(e["identity"]["workload"]["pod_name"], "late-0", "{e}");
    assert_eq!(
        e["identity"]["workload"]["spiffe_id"], "spiffe://test.example/ns/agents/sa/coder",
        "{e}"
    );
    metric_until(port, "vigil_kubernetes_held_events", |v| v == 0, &d);
    let status = d.api().status().expect("status");
    assert_eq!(
        status
            .attribution
            .expect("attribution")
            .without_pod_identity,
        0
    );
}

#[test]
fn api_server_outage_degrades_and_recovers() {
    if !kernel_available() {
        return;
    }
    let _serial = serial();
    let node = SimNode::new();
    let mut api = FakeApiServer::start();
    let a = node.container(Runtime::Containerd);
    let late = node.container(Runtime::Crio);
    api.apply(PodSpec::for_cgroup(
        &a,
        NODE,
        "assistant-0",
        "agents",
        "default",
        &[("app", "code-assistant")],
        true,
    ));
    let port = free_port();
    let d = Daemon::start(&format!(
        r#"{}{POD_AGENTS}{CODER_AGENT}
[[agent]]
name = "globbed"
  [agent.match]
  cgroups = ["{top}/kubepods.slice/**/crio-*.scope"]
  [agent.scope]
  tools = ["/**"]
  data = ["everything"]
"#,
        kube_sections(&api, "2s", port),
        top = node.top_rel
    ));
    let e = exec_seen(&d, &a, "up");
    assert_eq!(e["identity"]["workload"]["pod_name"], "assistant-0", "{e}");
    assert!(warnings(&d).iter().all(|w| !w.starts_with("kubernetes:")));

    api.stop();
    let w = wait_warnings(&d, "the outage", |w| {
        w.iter()
            .any(|w| w.contains("kubernetes: API server unreachable"))
    });
    assert!(
        w.iter().any(|w| w.contains("cgroup-level identity")),
        "{w:?}"
    );
    metric_until(port, "vigil_kubernetes_api_up", |v| v == 0, &d);
    // The sensors never stopped, and known pods keep their identity.
    d.settle();
    let e = exec_seen(&d, &a, "down-known");
    assert_eq!(e["identity"]["workload"]["pod_name"], "assistant-0", "{e}");
    assert_eq!(e["identity"]["agent"], "assistant", "{e}");
    // A pod created during the outage: cgroup-level identity only.
    api.apply(PodSpec::for_cgroup(
        &late,
        NODE,
        "batch-0",
        "batch",
        "runner",
        &[],
        true,
    ));
    let e = exec_seen(&d, &late, "down-new");
    assert_eq!(e["identity"]["agent"], "globbed", "{e}");
    assert_eq!(
        e["identity"]["workload"]["container_id"],
        late.container_id.as_str(),
        "{e}"
    );
    assert!(e["identity"]["workload"].get("pod_name").is_none(), "{e}");
    let status = d.api().status().expect("status");
    assert!(
        status
            .attribution
            .expect("attribution")
            .without_pod_identity
            >= 1
    );

    api.restart();
    wait_warnings(&d, "the recovery", |w| {
        w.iter().all(|w| !w.starts_with("kubernetes:"))
    });
    metric_until(port, "vigil_kubernetes_api_up", |v| v == 1, &d);
    let e = exec_seen(&d, &late, "recovered");
    assert_eq!(e["identity"]["workload"]["pod_name"], "batch-0", "{e}");
    assert_eq!(
        e["identity"]["workload"]["spiffe_id"], "spiffe://test.example/ns/batch/sa/runner",
        "{e}"
    );
    assert_eq!(e["identity"]["agent"], "globbed", "{e}");
}
