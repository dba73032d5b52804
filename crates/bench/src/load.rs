//! The closed-loop load generator: N client tasks, each with its own
//! keep-alive connection, sending the same request back to back for a
//! warm-up and then a measured window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::http::{Conn, RequestSpec};
use crate::procfs::{self, Proc};
use crate::stats::Summary;

/// The figures of one scenario at one concurrency.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    pub name: String,
    pub concurrency: usize,
    /// Successful requests completed inside the measured window.
    pub requests: usize,
    /// Every request sent, warm-up included.
    pub total_requests: usize,
    /// Non-2xx answers and transport errors, warm-up included.
    pub errors: usize,
    /// The measured window (longer than asked when extended).
    pub window: Duration,
    pub rps: f64,
    pub latency: Option<Summary>,
    /// Server CPU (utime + stime) over the measured window per request, µs.
    pub server_cpu_us_per_req: Option<f64>,
    /// The load generator's own CPU over the window per request, µs.
    pub loadgen_cpu_us_per_req: Option<f64>,
    /// Server CPU over the window as a share of one core (1.0 = one core).
    pub server_cores: f64,
    pub loadgen_cores: f64,
    /// CPU used by every other process on the machine over the window, in
    /// cores: what the benchmark competed with.
    pub other_cores: f64,
    pub mean_response_bytes: f64,
    pub first_error: Option<String>,
}

/// The server under load.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub addr: SocketAddr,
    pub server_pid: u32,
    /// Clock ticks per second, for /proc CPU times.
    pub ticks_per_sec: u64,
}

struct TaskOut {
    /// (completion time, latency ns) of the successes after the warm-up.
    completions: Vec<(Instant, u64)>,
    total: usize,
    errors: usize,
    bytes: u64,
    first_error: Option<String>,
}

/// The fewest successful requests a window may hold: a window too short
/// for the latency (16 bcrypt logins sharing the cores finish together,
/// seconds apart) is extended until this many completed, so that
/// throughput is not read off a window that saw zero or one wave.
pub fn min_requests(concurrency: usize) -> usize {
    (2 * concurrency).max(20)
}

/// The longest a window is extended past `duration` to reach
/// [`min_requests`].
const MAX_EXTENSION: Duration = Duration::from_secs(120);

struct Shared {
    /// Successful requests completed after the warm-up.
    completed: AtomicUsize,
    /// Set when the window closes: clients send nothing more.
    stop: AtomicBool,
}

/// Runs `spec` from `concurrency` clients for `warmup` then `duration`
/// (extended if fewer than [`min_requests`] completed). A request counts in
/// the window when it completes inside it. Clients stop sending when the
/// window closes and their last requests are awaited, so no work spills
/// into the next scenario.
pub async fn run(
    target: &Target,
    name: &str,
    spec: RequestSpec,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<ScenarioResult> {
    let Target {
        addr,
        server_pid,
        ticks_per_sec,
    } = *target;
    let spec = Arc::new(spec);
    let shared = Arc::new(Shared {
        completed: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let start = Instant::now();
    let warm_end = start + warmup;
    let end = warm_end + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        tasks.push(tokio::spawn(client(
            addr,
            spec.clone(),
            shared.clone(),
            warm_end,
        )));
    }

    tokio::time::sleep_until(warm_end.into()).await;
    let t0 = Instant::now();
    let srv0 = procfs::cpu_ticks(Proc::Pid(server_pid))?;
    let me0 = procfs::cpu_ticks(Proc::SelfProc)?;
    let all0 = procfs::machine_ticks()?;
    tokio::time::sleep_until(end.into()).await;
    let wanted = min_requests(concurrency);
    while shared.completed.load(Ordering::Relaxed) < wanted && end.elapsed() < MAX_EXTENSION {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let t1 = Instant::now();
    let srv1 = procfs::cpu_ticks(Proc::Pid(server_pid))?;
    let me1 = procfs::cpu_ticks(Proc::SelfProc)?;
    let all1 = procfs::machine_ticks()?;

    let mut latencies = Vec::new();
    let (mut total, mut errors, mut bytes, mut first_error) = (0, 0, 0u64, None);
    for t in tasks {
        let out = t.await?;
        latencies.extend(
            out.completions
                .iter()
                .filter(|(done, _)| *done < t1)
                .map(|(_, ns)| *ns),
        );
        total += out.total;
        errors += out.errors;
        bytes += out.bytes;
        if first_error.is_none() {
            first_error = out.first_error;
        }
    }
    let requests = latencies.len();
    let window = t1 - t0;
    let secs = window.as_secs_f64();
    let us_per_tick = 1e6 / ticks_per_sec as f64;
    let per_req = |ticks: u64| (requests > 0).then(|| ticks as f64 * us_per_tick / requests as f64);
    let srv_ticks = srv1.saturating_sub(srv0);
    let me_ticks = me1.saturating_sub(me0);
    let busy_ticks = all1.busy.saturating_sub(all0.busy);
    let cores = |ticks: u64| ticks as f64 / ticks_per_sec as f64 / secs;
    let result = ScenarioResult {
        name: name.to_string(),
        concurrency,
        requests,
        total_requests: total,
        errors,
        window,
        rps: requests as f64 / secs,
        latency: Summary::of(&mut latencies),
        server_cpu_us_per_req: per_req(srv_ticks),
        loadgen_cpu_us_per_req: per_req(me_ticks),
        server_cores: cores(srv_ticks),
        loadgen_cores: cores(me_ticks),
        other_cores: cores(busy_ticks.saturating_sub(srv_ticks + me_ticks)),
        mean_response_bytes: if total > errors {
            bytes as f64 / (total - errors) as f64
        } else {
            0.0
        },
        first_error,
    };
    if total == 0 || result.errors * 100 > total {
        bail!(
            "{name} at concurrency {concurrency}: {} errors out of {} requests (over 1%); first error: {}",
            result.errors,
            total,
            result.first_error.as_deref().unwrap_or("none recorded")
        );
    }
    Ok(result)
}

async fn client(
    addr: SocketAddr,
    spec: Arc<RequestSpec>,
    shared: Arc<Shared>,
    warm_end: Instant,
) -> TaskOut {
    let mut out = TaskOut {
        completions: Vec::with_capacity(1 << 16),
        total: 0,
        errors: 0,
        bytes: 0,
        first_error: None,
    };
    let mut conn: Option<Conn> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::connect(addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.total += 1;
                    out.errors += 1;
                    out.first_error
                        .get_or_insert_with(|| format!("connecting to {addr}: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Timed from just before the request is sent to the last byte of
        // the response body.
        let t0 = Instant::now();
        let res = c.send(&spec).await;
        let t1 = Instant::now();
        out.total += 1;
        match res {
            Ok((status, body)) if status.is_success() => {
                out.bytes += body.len() as u64;
                if t1 >= warm_end {
                    out.completions.push((t1, (t1 - t0).as_nanos() as u64));
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok((status, body)) => {
                out.errors += 1;
                out.first_error.get_or_insert_with(|| {
                    format!("HTTP {status}: {}", String::from_utf8_lossy(&body))
                });
            }
            Err(e) => {
                out.errors += 1;
                out.first_error
                    .get_or_insert_with(|| format!("request failed: {e:#}"));
                conn = None;
            }
        }
    }
    out
}
