//! End-to-end delivery: file opens made by a real process in a watched
//! session travel through the kernel programs, the ring buffer, the daemon's
//! decoder, enrichment, scope check and journal, and out of
//! `EventService.Subscribe` on the daemon's Unix socket to subscribers in
//! this process.
//!
//! It measures
//! - events per second delivered with 1 and with 10 subscribers: a workload
//!   opens a file at a steady offered rate; each subscriber's rate is the
//!   events it received over the time from the first event's kernel
//!   timestamp to its receipt of the last one, and a run's figure is its
//!   slowest subscriber. Ten subscribers run twice: as forwarding consumers
//!   that read sequence, timestamp and path of each message and skip the
//!   rest (the target's figure: a SIEM shipper off the node), and as
//!   consumers that decode every event in full ([`CONFIGURATIONS`]);
//! - loss in those runs: the events the worst subscriber of each run never
//!   received (or received only as a `gap`), and, to tell where they went,
//!   the records the kernel could not deliver (the daemon's loss counters);
//! - latency from the kernel timestamp (`CLOCK_BOOTTIME` at the hook) to
//!   receipt, at 10,000 events/s with one subscriber.
//!
//! Runs alternate between configurations and each figure is the median over
//! the repetitions. It needs a running daemon with a permissive agent that
//! matches sessions: `cargo xtask bench e2e` starts one and passes
//! `VIGIL_BENCH_SOCKET`, `VIGIL_BENCH_AGENT`, `VIGIL_BENCH_VIGIL` (the
//! `vigil` binary for `vigil exec`), `VIGIL_BENCH_WORKLOAD` (the
//! `vigil-workload` binary) and `VIGIL_BENCH_DAEMON_PID`. Without them it
//! says so and reports nothing.
//!
//! With `VIGIL_BENCH_OTLP_PORT` set (`cargo xtask bench export`) it is
//! instead the OTLP collector of the daemon's `[[export]]` sink: see
//! [`export`].
//!
//! The producer, the daemon and the subscribers share the machine, so each
//! run also reports how many cores the daemon and the subscribers used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tonic::transport::Channel;
use vigil::api::pb;
use vigil::sensors::decode::clock_ns;
use vigil_harness::stats::median;

/// Events per throughput run.
const THROUGHPUT_EVENTS: u64 = 200_000;
/// Offered rate of the throughput runs: 10% above the target, so that a
/// pipeline that sustains the target passes despite the last event's
/// latency, and one that does not shows it as a lower rate or as loss.
const OFFERED_RATE: u64 = 110_000;
const TARGET_RATE: f64 = 100_000.0;
/// Events and rate of the latency runs.
const LATENCY_EVENTS: u64 = 30_000;
const LATENCY_RATE: u64 = 10_000;
const TARGET_P99_MS: f64 = 10.0;
const REPEATS: usize = 3;
/// A subscriber that receives nothing for this long has lost the rest.
const IDLE: Duration = Duration::from_secs(10);

/// What the bench is pointed at.
struct Setup {
    socket: PathBuf,
    agent: String,
    vigil: PathBuf,
    workload: PathBuf,
    /// The file the workload opens; only its events are counted.
    file: PathBuf,
    /// The daemon, for its CPU time.
    daemon_pid: u32,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn from_env() -> Result<Option<Self>> {
        let var = |name| std::env::var_os(name).map(PathBuf::from);
        let (Some(socket), Some(agent), Some(vigil), Some(workload), Some(pid)) = (
            var("VIGIL_BENCH_SOCKET"),
            var("VIGIL_BENCH_AGENT"),
            var("VIGIL_BENCH_VIGIL"),
            var("VIGIL_BENCH_WORKLOAD"),
            var("VIGIL_BENCH_DAEMON_PID"),
        ) else {
            return Ok(None);
        };
        let daemon_pid = pid
            .to_str()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("VIGIL_BENCH_DAEMON_PID {} is not a pid", pid.display()))?;
        let dir = tempfile::tempdir().context("creating a scratch directory")?;
        let file = dir.path().join("e2e-target.txt");
        std::fs::write(&file, b"vigil e2e bench\n")
            .with_context(|| format!("writing {}", file.display()))?;
        Ok(Some(Self {
            socket,
            agent: agent.to_string_lossy().into_owned(),
            vigil,
            workload,
            file,
            daemon_pid,
            _dir: dir,
        }))
    }
}

/// What one subscriber saw of one run.
#[derive(Default)]
struct Received {
    events: u64,
    gaps: u64,
    first_kernel_ns: Option<u64>,
    last_receipt_ns: u64,
    /// Kernel timestamp to receipt, per event.
    latencies_ns: Vec<u64>,
}

impl Received {
    fn rate(&self) -> f64 {
        let span = self
            .last_receipt_ns
            .saturating_sub(self.first_kernel_ns.unwrap_or(self.last_receipt_ns));
        if span == 0 {
            0.0
        } else {
            self.events as f64 * 1e9 / span as f64
        }
    }
}

/// What one run measured.
struct Run {
    /// The slowest subscriber's delivered events/s.
    rate: f64,
    /// Events the worst subscriber missed or got only as a gap.
    lost: u64,
    /// Records the kernel could not hand to the daemon meanwhile.
    kernel_lost: u64,
    /// Every subscriber's latencies, merged.
    latencies_ns: Vec<u64>,
    /// The rate the workload actually offered.
    offered: f64,
    /// Cores the daemon used while the run lasted.
    daemon_cores: f64,
    /// Cores this process (the subscribers) used meanwhile.
    subscriber_cores: f64,
}

/// CPU time a process used so far, in nanoseconds (of whole clock ticks).
fn cpu_ns(pid: u32) -> Result<u64> {
    Ok(vigil_harness::cpu::time(pid)?.as_nanos() as u64)
}

/// Cores used by the daemon and by this process since [`Usage::start`].
struct Usage {
    wall: std::time::Instant,
    daemon_ns: u64,
    own_ns: u64,
}

impl Usage {
    fn start(daemon_pid: u32) -> Result<Self> {
        Ok(Self {
            wall: std::time::Instant::now(),
            daemon_ns: cpu_ns(daemon_pid)?,
            own_ns: clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID),
        })
    }

    /// (daemon cores, own cores).
    fn cores(&self, daemon_pid: u32) -> Result<(f64, f64)> {
        let wall = self.wall.elapsed().as_nanos() as f64;
        let daemon = cpu_ns(daemon_pid)?.saturating_sub(self.daemon_ns) as f64;
        let own = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).saturating_sub(self.own_ns) as f64;
        Ok((daemon / wall, own / wall))
    }
}

async fn connect(socket: &Path) -> Result<Channel> {
    vigil::api::client::connect_unix(socket)
        .await
        .with_context(|| format!("connecting to {}", socket.display()))
}

/// Records the kernel could not deliver, over all sensors, so far.
async fn kernel_lost(channel: &Channel) -> Result<u64> {
    let status = pb::node_service_client::NodeServiceClient::new(channel.clone())
        .status(pb::StatusRequest {})
        .await
        .context("NodeService.Status")?
        .into_inner();
    Ok(status.sensors.iter().map(|s| s.lost).sum())
}

/// What a subscriber needs of one message.
enum Seen {
    /// An open of the bench's file, with its kernel timestamp.
    Open(u64),
    Gap,
    Other,
}

/// A message type a subscriber decodes each `SubscribeResponse` into.
trait Response: prost::Message + Default + Send + 'static {
    fn seen(&self, path: &str) -> Seen;
}

/// A consumer that decodes every event in full, as the CLI does.
impl Response for pb::SubscribeResponse {
    fn seen(&self, path: &str) -> Seen {
        let Some(event) = &self.event else {
            return Seen::Other;
        };
        match &event.payload {
            Some(pb::event::Payload::FileOpen(open)) if open.path == path => {
                Seen::Open(event.kernel_ts_ns)
            }
            Some(pb::event::Payload::Gap(_)) => Seen::Gap,
            _ => Seen::Other,
        }
    }
}

/// A forwarding consumer (a shipper that hands events on to a SIEM) reads
/// only what it routes by and skips the rest of each message: the same
/// bytes arrive over the same stream, but prost only steps over the fields
/// these types do not name. The tags are those of `vigil/v1/*.proto`.
mod forward {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(message, optional, tag = "1")]
        pub event: Option<Event>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(uint64, tag = "1")]
        pub sequence: u64,
        #[prost(uint64, tag = "4")]
        pub kernel_ts_ns: u64,
        // Two members of the `payload` oneof; on the wire a oneof member is
        // an ordinary field.
        #[prost(message, optional, tag = "15")]
        pub file_open: Option<FileOpen>,
        #[prost(message, optional, tag = "25")]
        pub gap: Option<Gap>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileOpen {
        #[prost(string, tag = "1")]
        pub path: String,
    }

    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Gap {}
}

impl Response for forward::Response {
    fn seen(&self, path: &str) -> Seen {
        match &self.event {
            Some(forward::Event {
                file_open: Some(open),
                kernel_ts_ns,
                ..
            }) if open.path == path => Seen::Open(*kernel_ts_ns),
            Some(forward::Event { gap: Some(_), .. }) => Seen::Gap,
            _ => Seen::Other,
        }
    }
}

/// How the subscribers of a run consume their streams.
#[derive(Clone, Copy)]
enum Consumer {
    /// Every event decoded in full ([`pb::SubscribeResponse`]).
    Decoding,
    /// Sequence, timestamp and payload path only ([`forward::Response`]).
    Forwarding,
}

/// Subscribes on `channel`, decoding the stream's messages as `R`.
async fn subscribe<R: Response>(
    channel: Channel,
    request: pb::SubscribeRequest,
) -> Result<tonic::Streaming<R>> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.context("EventService is not ready")?;
    let codec = tonic_prost::ProstCodec::<pb::SubscribeRequest, R>::default();
    let stream = grpc
        .server_streaming(
            tonic::Request::new(request),
            http::uri::PathAndQuery::from_static("/vigil.v1.EventService/Subscribe"),
            codec,
        )
        .await
        .context("EventService.Subscribe")?
        .into_inner();
    Ok(stream)
}

/// Reads a subscription until `expect` matching events arrived, the stream
/// ended, or nothing came for [`IDLE`].
async fn receive<R: Response>(
    mut stream: tonic::Streaming<R>,
    path: String,
    expect: u64,
) -> Result<Received> {
    let mut got = Received::default();
    while got.events < expect {
        let message = match tokio::time::timeout(IDLE, stream.message()).await {
            Err(_) | Ok(Ok(None)) => break,
            Ok(Err(status)) => bail!("subscription failed: {status}"),
            Ok(Ok(Some(message))) => message,
        };
        let now = clock_ns(libc::CLOCK_BOOTTIME);
        match message.seen(&path) {
            Seen::Open(kernel_ts_ns) => {
                got.events += 1;
                got.first_kernel_ns.get_or_insert(kernel_ts_ns);
                got.last_receipt_ns = now;
                got.latencies_ns.push(now.saturating_sub(kernel_ts_ns));
            }
            Seen::Gap => got.gaps += 1,
            Seen::Other => {}
        }
    }
    Ok(got)
}

/// Runs the workload in `session`: `events` opens of the bench's file at
/// `rate` per second. The time it took, in nanoseconds.
async fn workload(setup: &Setup, session: &str, events: u64, rate: u64) -> Result<f64> {
    let output = tokio::process::Command::new(&setup.vigil)
        .args(["exec", "--agent", &setup.agent, "--session", session, "--"])
        .arg(&setup.workload)
        .args([
            "bench-open-rate",
            &setup.file.to_string_lossy(),
            &events.to_string(),
            &rate.to_string(),
        ])
        .env("VIGIL_SOCKET", &setup.socket)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running the workload")?;
    ensure!(
        output.status.success(),
        "workload failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("workload printed no elapsed time")
}

/// One run: `subscribers` subscriptions to a fresh session, then a workload
/// in that session making `events` opens at `rate` per second.
async fn run(
    setup: &Setup,
    name: &str,
    (subscribers, consumer): (usize, Consumer),
    events: u64,
    rate: u64,
) -> Result<Run> {
    let session = format!("e2e-{name}-{}", std::process::id());
    let channel = connect(&setup.socket).await?;
    let lost_before = kernel_lost(&channel).await?;
    let path = setup.file.to_string_lossy().into_owned();
    let request = pb::SubscribeRequest {
        start: Some(pb::subscribe_request::Start::Now(true)),
        filter: Some(pb::EventFilter {
            sessions: vec![session.clone()],
            kinds: vec![pb::EventKind::FileOpen.into()],
            ..pb::EventFilter::default()
        }),
    };
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        // Each subscriber has its own connection, as separate consumers would.
        // The call returns once the daemon has registered the subscription,
        // so `now` cannot miss the workload's first event.
        let channel = connect(&setup.socket).await?;
        let path = path.clone();
        readers.push(match consumer {
            Consumer::Decoding => tokio::spawn(receive(
                subscribe::<pb::SubscribeResponse>(channel, request.clone()).await?,
                path,
                events,
            )),
            Consumer::Forwarding => tokio::spawn(receive(
                subscribe::<forward::Response>(channel, request.clone()).await?,
                path,
                events,
            )),
        });
    }

    let usage = Usage::start(setup.daemon_pid)?;
    let elapsed_ns = workload(setup, &session, events, rate).await?;

    let mut received = Vec::with_capacity(subscribers);
    for reader in readers {
        received.push(reader.await.context("subscriber task")??);
    }
    let (daemon_cores, subscriber_cores) = usage.cores(setup.daemon_pid)?;
    let kernel = kernel_lost(&channel).await?.saturating_sub(lost_before);
    let lost = received
        .iter()
        .map(|r| events.saturating_sub(r.events) + r.gaps)
        .max()
        .unwrap_or(events);
    let rate_min = received
        .iter()
        .map(Received::rate)
        .fold(f64::INFINITY, f64::min);
    let latencies_ns = received.into_iter().flat_map(|r| r.latencies_ns).collect();
    Ok(Run {
        rate: rate_min,
        lost,
        kernel_lost: kernel,
        latencies_ns,
        offered: events as f64 * 1e9 / elapsed_ns,
        daemon_cores,
        subscriber_cores,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64
}

/// The medians of one throughput configuration over its repetitions.
#[derive(Default)]
struct Series {
    rate: Vec<f64>,
    offered: Vec<f64>,
    daemon_cores: Vec<f64>,
    subscriber_cores: Vec<f64>,
}

impl Series {
    fn push(&mut self, r: &Run) {
        self.rate.push(r.rate);
        self.offered.push(r.offered);
        self.daemon_cores.push(r.daemon_cores);
        self.subscriber_cores.push(r.subscriber_cores);
    }

    fn print(self, name: &str, target: &str) {
        // What the workload managed to offer, and the cores the daemon and
        // the subscribers took, explain the rate on a small machine.
        println!(
            "BENCH {name}.offered {:.0} events/s -",
            median(&self.offered)
        );
        println!(
            "BENCH {name}.events {:.0} events/s {target}",
            median(&self.rate)
        );
        println!(
            "BENCH {name}.daemon_cpu {:.2} cores -",
            median(&self.daemon_cores)
        );
        println!(
            "BENCH {name}.subscribers_cpu {:.2} cores -",
            median(&self.subscriber_cores)
        );
    }
}

/// The throughput configurations: name, subscribers, how they consume,
/// target. The target is Vigil's: delivering to ten consumers that live off
/// the node, as SIEM shippers do. Here they share the node's two vCPUs, so
/// the target run uses forwarding consumers, which take from the machine
/// what a remote consumer would not; the same run with fully decoding
/// consumers is printed beside it.
const CONFIGURATIONS: [(&str, usize, Consumer, bool); 3] = [
    ("e2e.sub1", 1, Consumer::Decoding, false),
    ("e2e.sub10", 10, Consumer::Forwarding, true),
    ("e2e.sub10_decoding", 10, Consumer::Decoding, false),
];

async fn bench(setup: &Setup) -> Result<()> {
    let mut series: [Series; CONFIGURATIONS.len()] = Default::default();
    let (mut lost, mut kernel_lost) = (0, 0);
    let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
    for repeat in 0..REPEATS {
        for (slot, &(name, subscribers, consumer, _)) in CONFIGURATIONS.iter().enumerate() {
            let r = run(
                setup,
                &format!("rate{slot}-{repeat}"),
                (subscribers, consumer),
                THROUGHPUT_EVENTS,
                OFFERED_RATE,
            )
            .await?;
            eprintln!(
                "{name}: offered {:.0}/s, delivered {:.0}/s (slowest), \
                 lost {} (kernel {}); daemon {:.2} cores, subscribers {:.2} cores",
                r.offered, r.rate, r.lost, r.kernel_lost, r.daemon_cores, r.subscriber_cores
            );
            series[slot].push(&r);
            lost += r.lost;
            kernel_lost += r.kernel_lost;
        }
        let mut r = run(
            setup,
            &format!("latency-{repeat}"),
            (1, Consumer::Decoding),
            LATENCY_EVENTS,
            LATENCY_RATE,
        )
        .await?;
        r.latencies_ns.sort_unstable();
        ensure!(
            !r.latencies_ns.is_empty(),
            "the latency run delivered no events"
        );
        let (p50, p99) = (
            percentile(&r.latencies_ns, 0.50) / 1e6,
            percentile(&r.latencies_ns, 0.99) / 1e6,
        );
        eprintln!(
            "e2e: latency at {:.0}/s: p50 {p50:.3} ms, p99 {p99:.3} ms, max {:.3} ms, lost {} \
             (kernel {}); daemon {:.2} cores",
            r.offered,
            percentile(&r.latencies_ns, 1.0) / 1e6,
            r.lost,
            r.kernel_lost,
            r.daemon_cores
        );
        p50s.push(p50);
        p99s.push(p99);
        lost += r.lost;
        kernel_lost += r.kernel_lost;
    }
    for (s, &(name, _, _, target)) in series.into_iter().zip(&CONFIGURATIONS) {
        let target = if target {
            format!(">={TARGET_RATE:.0}")
        } else {
            "-".to_owned()
        };
        s.print(name, &target);
    }
    println!("BENCH e2e.lost {lost} events <=0");
    println!("BENCH e2e.kernel_lost {kernel_lost} records -");
    println!("BENCH e2e.latency.p50 {:.3} ms -", median(&p50s));
    println!(
        "BENCH e2e.latency.p99 {:.3} ms <={TARGET_P99_MS}",
        median(&p99s)
    );
    Ok(())
}

fn main() -> Result<()> {
    let Some(setup) = Setup::from_env()? else {
        eprintln!(
            "e2e: skipped: this bench needs a running daemon; run it with `cargo xtask bench e2e`"
        );
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the client runtime")?;
    match std::env::var("VIGIL_BENCH_OTLP_PORT") {
        Ok(port) => {
            let port = port
                .parse()
                .with_context(|| format!("VIGIL_BENCH_OTLP_PORT {port:?} is not a port"))?;
            runtime.block_on(export::bench(&setup, port))
        }
        Err(_) => runtime.block_on(bench(&setup)),
    }
}

/// The `export` bench: the daemon writes every event to a file as OCSF and
/// exports it to an OTLP sink (OCSF bodies), whose collector is this
/// process: a tonic `LogsService` that decodes every request in full and
/// counts the records of the run's session. A run's rate is the records
/// received over the time from the first event's time to the receipt of the
/// last; lost are the events the collector never received.
mod export {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

    use anyhow::{Context as _, Result};
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
        logs_service_server::{LogsService, LogsServiceServer},
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use vigil_harness::stats::median;

    use super::{IDLE, OFFERED_RATE, REPEATS, Setup, TARGET_RATE, THROUGHPUT_EVENTS, Usage};

    /// What the collector saw of one session.
    #[derive(Default, Clone, Copy)]
    struct Seen {
        records: u64,
        first_event_ns: Option<u64>,
        last_receipt_ns: u64,
    }

    #[derive(Clone, Default)]
    struct Collector {
        sessions: Arc<Mutex<HashMap<String, Seen>>>,
    }

    fn wall_ns() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }

    #[tonic::async_trait]
    impl LogsService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let now = wall_ns();
            let mut sessions = self.sessions.lock().unwrap();
            for rl in &request.get_ref().resource_logs {
                for sl in &rl.scope_logs {
                    for r in &sl.log_records {
                        if r.event_name != "vigil.file_open" {
                            continue;
                        }
                        let session = r.attributes.iter().find_map(|kv| {
                            match kv.value.as_ref()?.value.as_ref()? {
                                Value::StringValue(s) if kv.key == "vigil.session" => Some(s),
                                _ => None,
                            }
                        });
                        let Some(session) = session else { continue };
                        let seen = sessions.entry(session.clone()).or_default();
                        seen.records += 1;
                        seen.first_event_ns.get_or_insert(r.time_unix_nano);
                        seen.last_receipt_ns = now;
                    }
                }
            }
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }

    impl Collector {
        fn seen(&self, session: &str) -> Seen {
            self.sessions
                .lock()
                .unwrap()
                .get(session)
                .copied()
                .unwrap_or_default()
        }

        /// Waits until `expect` records of `session` arrived, or none came for [`IDLE`].
        async fn wait(&self, session: &str, expect: u64) -> Seen {
            let mut last = (0, Instant::now());
            loop {
                let seen = self.seen(session);
                if seen.records >= expect {
                    return seen;
                }
                if seen.records != last.0 {
                    last = (seen.records, Instant::now());
                } else if last.1.elapsed() > IDLE {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub async fn bench(setup: &Setup, port: u16) -> Result<()> {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LogsServiceServer::new(collector.clone()))
                .serve_with_incoming(
                    // As collectors do (Go sets it on every socket): without
                    // it each answer waits on Nagle and delayed ACKs.
                    tokio_stream::StreamExt::map(
                        tokio_stream::wrappers::TcpListenerStream::new(listener),
                        |s| {
                            if let Ok(s) = &s {
                                let _ = s.set_nodelay(true);
                            }
                            s
                        },
                    ),
                ),
        );
        let (mut rates, mut offered, mut daemon_cores, mut own_cores) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut lost, mut kernel_lost) = (0, 0);
        let channel = super::connect(&setup.socket).await?;
        for repeat in 0..REPEATS {
            let session = format!("export-{repeat}-{}", std::process::id());
            let lost_before = super::kernel_lost(&channel).await?;
            let usage = Usage::start(setup.daemon_pid)?;
            let elapsed_ns =
                super::workload(setup, &session, THROUGHPUT_EVENTS, OFFERED_RATE).await?;
            let seen = collector.wait(&session, THROUGHPUT_EVENTS).await;
            let (daemon, own) = usage.cores(setup.daemon_pid)?;
            let span = seen
                .last_receipt_ns
                .saturating_sub(seen.first_event_ns.unwrap_or(seen.last_receipt_ns));
            let rate = if span == 0 {
                0.0
            } else {
                seen.records as f64 * 1e9 / span as f64
            };
            let offer = THROUGHPUT_EVENTS as f64 * 1e9 / elapsed_ns;
            let missed = THROUGHPUT_EVENTS.saturating_sub(seen.records);
            let kernel = super::kernel_lost(&channel)
                .await?
                .saturating_sub(lost_before);
            eprintln!(
                "export: offered {offer:.0}/s, collector received {rate:.0}/s, lost {missed} \
                 (kernel {kernel}); daemon {daemon:.2} cores, collector {own:.2} cores"
            );
            kernel_lost += kernel;
            rates.push(rate);
            offered.push(offer);
            daemon_cores.push(daemon);
            own_cores.push(own);
            lost += missed;
        }
        server.abort();
        println!("BENCH export.offered {:.0} events/s -", median(&offered));
        println!(
            "BENCH export.events {:.0} events/s >={TARGET_RATE:.0}",
            median(&rates)
        );
        println!("BENCH export.lost {lost} events <=0");
        println!("BENCH export.kernel_lost {kernel_lost} records -");
        println!(
            "BENCH export.daemon_cpu {:.2} cores -",
            median(&daemon_cores)
        );
        println!(
            "BENCH export.collector_cpu {:.2} cores -",
            median(&own_cores)
        );
        Ok(())
    }
}
