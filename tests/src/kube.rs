//! A simulated Kubernetes node for the Kubernetes tests: container-style
//! cgroups (containerd and CRI-O naming) under the real cgroup v2 mount with
//! real processes in them, a small API server that speaks the pod list and
//! watch protocol the daemon's kube-rs client uses, and a scraper for the
//! daemon's `/metrics`.

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};

static N: AtomicU32 = AtomicU32::new(0);

/// 64 hex digits, unique per call in this test process.
fn unique_hex(n: u32, width: usize) -> String {
    let seed = format!("{:08x}{:08x}", std::process::id(), n);
    seed.repeat(width.div_ceil(seed.len()))[..width].to_owned()
}

/// Container runtimes and their cgroup naming under the systemd driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `cri-containerd-<id>.scope`, status id `containerd://<id>`.
    Containerd,
    /// `crio-<id>.scope`, status id `cri-o://<id>`.
    Crio,
}

/// Serializes the tests that create pod cgroups: the daemon of one would
/// otherwise see the containers of another (they share the cgroup tree).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A simulated node's kubelet cgroups, under a private top directory:
/// `/vigil-k8s-<pid>-<n>/kubepods.slice/...`. Removed (after killing what
/// runs in it) when dropped.
pub struct SimNode {
    top: PathBuf,
    /// The top directory relative to the cgroup v2 mount (`/vigil-k8s-...`).
    pub top_rel: String,
}

impl SimNode {
    #[must_use]
    pub fn new() -> Self {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mount = crate::cgroup2_mount().expect("cgroup v2 mount");
        let top_rel = format!("/vigil-k8s-{}-{n}", std::process::id());
        let top = mount.join(top_rel.trim_start_matches('/'));
        std::fs::create_dir_all(&top).expect("create the node's cgroup");
        Self { top, top_rel }
    }

    /// A container cgroup of a fresh pod (besteffort `QoS`, systemd driver):
    /// `.../kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
    #[must_use]
    pub fn container(&self, runtime: Runtime) -> ContainerCgroup {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let hex = unique_hex(n, 32);
        let pod_uid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        );
        let container_id = unique_hex(n.wrapping_mul(7919).wrapping_add(13), 64);
        let pod_slice = format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_"));
        let scope = match runtime {
            Runtime::Containerd => format!("cri-containerd-{container_id}.scope"),
            Runtime::Crio => format!("crio-{container_id}.scope"),
        };
        let pod_rel = format!(
            "{}/kubepods.slice/kubepods-besteffort.slice/{pod_slice}",
            self.top_rel
        );
        let rel = format!("{pod_rel}/{scope}");
        let mount = crate::cgroup2_mount().expect("cgroup v2 mount");
        let dir = mount.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).expect("create container cgroup");
        ContainerCgroup {
            pod_dir: mount.join(pod_rel.trim_start_matches('/')),
            rel,
            dir,
            container_id,
            pod_uid,
            runtime,
        }
    }
}

impl Default for SimNode {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        remove_cgroup(&self.top);
    }
}

/// Kills everything in a cgroup tree and removes it.
fn remove_cgroup(dir: &std::path::Path) {
    let _ = vigil_harness::cgroup::kill(dir);
    let _ = vigil_harness::cgroup::remove(dir);
}

/// A container's cgroup in kubelet's layout; its pod's cgroup is removed
/// when it is dropped.
pub struct ContainerCgroup {
    pod_dir: PathBuf,
    /// The container cgroup, relative to the cgroup v2 mount.
    pub rel: String,
    /// Absolute directory of the container cgroup.
    pub dir: PathBuf,
    pub container_id: String,
    /// Canonical (dashed) pod UID.
    pub pod_uid: String,
    pub runtime: Runtime,
}

impl ContainerCgroup {
    /// The `containerID` the kubelet reports for this container.
    #[must_use]
    pub fn status_id(&self) -> String {
        match self.runtime {
            Runtime::Containerd => format!("containerd://{}", self.container_id),
            Runtime::Crio => format!("cri-o://{}", self.container_id),
        }
    }

    /// Runs `argv` inside the container cgroup: the child moves itself in
    /// before it executes, so everything it does is the container's.
    #[must_use]
    pub fn run(&self, argv: &[&str]) -> Output {
        let procs = CString::new(
            self.dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path without NUL");
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null());
        // SAFETY: between fork and exec only async-signal-safe calls (open,
        // write, close) on memory prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.output().expect("run in the container cgroup")
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.pod_dir);
    }
}

/// A pod object as the API server returns it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// `(container name, containerID)` reported in `status.containerStatuses`.
    pub containers: Vec<(String, String)>,
}

impl PodSpec {
    /// A pod of `node` whose UID is that of `cgroup`; its container is
    /// reported as `main` when `reported`.
    #[must_use]
    pub fn for_cgroup(
        cgroup: &ContainerCgroup,
        node: &str,
        name: &str,
        namespace: &str,
        service_account: &str,
        labels: &[(&str, &str)],
        reported: bool,
    ) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid: cgroup.pod_uid.clone(),
            node: node.to_owned(),
            service_account: service_account.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            containers: if reported {
                vec![("main".to_owned(), cgroup.status_id())]
            } else {
                Vec::new()
            },
        }
    }

    fn to_json(&self, resource_version: u64) -> Value {
        let statuses: Vec<Value> = self
            .containers
            .iter()
            .map(|(name, id)| {
                json!({
                    "name": name, "containerID": id, "image": "registry.example/agent:1",
                    "imageID": "", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
                })
            })
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "uid": self.uid,
                "resourceVersion": resource_version.to_string(),
                "labels": self.labels,
            },
            "spec": {
                "nodeName": self.node,
                "serviceAccountName": self.service_account,
                "containers": [{"name": "main", "image": "registry.example/agent:1"}],
            },
            "status": {"phase": "Running", "containerStatuses": statuses},
        })
    }
}

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
struct Change {
    resource_version: u64,
    kind: &'static str,
    pod: PodSpec,
}

#[derive(Default)]
struct ApiState {
    pods: BTreeMap<String, PodSpec>,
    resource_version: u64,
    history: Vec<Change>,
    /// `(path and query)` of every request, for assertions.
    requests: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ApiState>>,
    changes: broadcast::Sender<Change>,
    /// Flips to true to end every open watch stream.
    stopping: watch::Receiver<bool>,
}

/// A Kubernetes API server that serves `GET /api/v1/pods` (list, and watch
/// with `watch=true`), requires a `spec.nodeName=` field selector and
/// applies it. It can be stopped (connections refused, open watches end)
/// and started again on the same port.
pub struct FakeApiServer {
    rt: tokio::runtime::Runtime,
    pub addr: SocketAddr,
    state: Arc<Mutex<ApiState>>,
    changes: broadcast::Sender<Change>,
    running: Option<(tokio::task::JoinHandle<()>, watch::Sender<bool>)>,
}

impl FakeApiServer {
    #[must_use]
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("API server runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind API server");
        let addr = listener.local_addr().expect("API server address");
        let (changes, _) = broadcast::channel(1024);
        let mut server = Self {
            rt,
            addr,
            state: Arc::new(Mutex::new(ApiState::default())),
            changes,
            running: None,
        };
        server.serve(listener);
        server
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let shared = Shared {
            state: Arc::clone(&self.state),
            changes: self.changes.clone(),
            stopping: stop_rx,
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .with_state(shared);
        let task = self.rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.running = Some((task, stop_tx));
    }

    /// Refuses connections and ends open watches, as an unreachable API
    /// server would look.
    pub fn stop(&mut self) {
        if let Some((task, stop)) = self.running.take() {
            let _ = stop.send(true);
            task.abort();
            let _ = self.rt.block_on(task);
        }
    }

    /// Serves again on the same address.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "the API server is running");
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match self.rt.block_on(tokio::net::TcpListener::bind(self.addr)) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(Instant::now() < deadline, "rebinding {}: {e}", self.addr);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        self.serve(listener);
    }

    fn change(&self, kind: &'static str, pod: PodSpec) {
        let mut st = self.state.lock().unwrap();
        st.resource_version += 1;
        let c = Change {
            resource_version: st.resource_version,
            kind,
            pod: pod.clone(),
        };
        if kind == "DELETED" {
            st.pods.remove(&pod.uid);
        } else {
            st.pods.insert(pod.uid.clone(), pod);
        }
        st.history.push(c.clone());
        let _ = self.changes.send(c);
    }

    /// Adds (or replaces) a pod; open watches see `ADDED` or `MODIFIED`.
    pub fn apply(&self, pod: PodSpec) {
        let known = self.state.lock().unwrap().pods.contains_key(&pod.uid);
        self.change(if known { "MODIFIED" } else { "ADDED" }, pod);
    }

    /// Removes a pod; open watches see `DELETED`.
    pub fn delete(&self, uid: &str) {
        let pod = self.state.lock().unwrap().pods.get(uid).cloned();
        if let Some(pod) = pod {
            self.change("DELETED", pod);
        }
    }

    /// Every request so far (path and query).
    #[must_use]
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node_of_selector(selector: Option<&String>) -> Option<String> {
    selector?
        .split(',')
        .find_map(|s| s.strip_prefix("spec.nodeName="))
        .map(str::to_owned)
}

async fn pods(
    State(shared): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    uri: axum::http::Uri,
) -> Response {
    shared.state.lock().unwrap().requests.push(
        uri.path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
    );
    let Some(node) = node_of_selector(q.get("fieldSelector")) else {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "this test server only serves pods by spec.nodeName",
            "reason": "BadRequest", "code": 400
        });
        return (StatusCode::BAD_REQUEST, axum::Json(status)).into_response();
    };
    let watching = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    if !watching {
        let st = shared.state.lock().unwrap();
        let items: Vec<Value> = st
            .pods
            .values()
            .filter(|p| p.node == node)
            .map(|p| p.to_json(st.resource_version))
            .collect();
        let list = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": st.resource_version.to_string()},
            "items": items,
        });
        return ([(header::CONNECTION, "close")], axum::Json(list)).into_response();
    }
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Subscribed before the history is read, so no change falls between.
    let live = shared.changes.subscribe();
    let backlog: Vec<Change> = shared
        .state
        .lock()
        .unwrap()
        .history
        .iter()
        .filter(|c| c.resource_version > since)
        .cloned()
        .collect();
    let stream = watch_stream(node, backlog, live, shared.stopping.clone());
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONNECTION, "close")
        .body(Body::from_stream(stream))
        .expect("watch response")
}

type Line = Result<Bytes, std::io::Error>;

fn line(c: &Change) -> Bytes {
    let mut text = json!({"type": c.kind, "object": c.pod.to_json(c.resource_version)}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn watch_stream(
    node: String,
    backlog: Vec<Change>,
    live: broadcast::Receiver<Change>,
    stopping: watch::Receiver<bool>,
) -> impl futures_util::Stream<Item = Line> + Send {
    let state = (node, backlog.into_iter(), live, stopping);
    futures_util::stream::unfold(
        state,
        |(node, mut backlog, mut live, mut stopping)| async move {
            for c in backlog.by_ref() {
                if c.pod.node == node {
                    let l = Ok(line(&c));
                    return Some((l, (node, backlog, live, stopping)));
                }
            }
            loop {
                if *stopping.borrow() {
                    return None;
                }
                tokio::select! {
                    _ = stopping.changed() => return None,
                    c = live.recv() => match c {
                        Ok(c) if c.pod.node == node => {
                            let l = Ok(line(&c));
                            return Some((l, (node, backlog, live, stopping)));
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    },
                }
            }
        },
    )
}

/// `GET /metrics` of a daemon; the body, or why it could not be read.
pub fn scrape(addr: SocketAddr) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP header in {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("metrics answered {head}"));
    }
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Ok(dechunk(body));
    }
    Ok(body.to_owned())
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of one sample line (`name{labels} value`) of an exposition;
/// `series` is the part before the value, exactly.
#[must_use]
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// The value of a sample that counts something (a counter, or a gauge of
/// a quantity): `None` when absent or not a whole number.
#[must_use]
pub fn count(text: &str, series: &str) -> Option<u64> {
    let v = sample(text, series)?;
    (v >= 0.0 && v.fract() == 0.0 && v < 9.0e15).then_some(v as u64)
}

/// A free TCP port on 127.0.0.1 (bound and released).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
