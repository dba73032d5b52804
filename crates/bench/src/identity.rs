//! `ferrostack-bench identity`: start-up time (cold and warm), idle memory,
//! and the throughput and latency of token validation and issue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use serde_json::{json, Value};

use crate::http::{Conn, RequestSpec};
use crate::load::{self, ScenarioResult};
use crate::procfs::{self, Memory, Proc};
use crate::report;
use crate::server::{Server, ServerConfig};
use crate::IdentityArgs;

const TOKENS: &str = "/identity/v3/auth/tokens";
const STARTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
pub const WARMUP: Duration = Duration::from_secs(1);
const IDLE_AFTER_START: Duration = Duration::from_secs(2);
const IDLE_AFTER_LOAD: Duration = Duration::from_secs(5);
pub(crate) const ADMIN_PASSWORD: &str = "ferrostack-bench-admin-password";

/// The scenarios, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "validate",
    "validate-nocatalog",
    "issue-token-method",
    "issue-password",
];

/// Everything measured, for the table and the JSON document.
#[derive(Debug)]
pub struct Results {
    pub binary: PathBuf,
    pub cores: usize,
    pub hash_rounds: u32,
    pub duration_s: u64,
    pub concurrency: Vec<usize>,
    /// Spawn to first 200, milliseconds.
    pub cold_ms: Vec<f64>,
    pub warm_ms: Vec<f64>,
    pub idle_after_start: Memory,
    pub idle_after_load: Memory,
    pub scenarios: Vec<ScenarioResult>,
}

pub async fn run(args: IdentityArgs) -> anyhow::Result<()> {
    let binary = resolve_binary(&args.ferrostack)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency: Vec<usize> = args.concurrency.iter().map(|&c| c as usize).collect();
    let cfg = ServerConfig {
        binary: binary.clone(),
        admin_password: ADMIN_PASSWORD.to_string(),
        hash_rounds: args.hash_rounds,
        extra_args: Vec::new(),
    };
    let tmp = tempfile::Builder::new()
        .prefix("ferrostack-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    eprintln!(
        "ferrostack-bench identity: {} (bcrypt cost {}), work dir {}",
        binary.display(),
        args.hash_rounds,
        tmp.path().display()
    );

    // 1. Start-up: cold (fresh data dir, first-start bootstrap included),
    //    then warm restarts on the last cold start's data dir.
    let mut cold_ms = Vec::new();
    let mut data_dir = PathBuf::new();
    for i in 1..=STARTS {
        data_dir = tmp.path().join(format!("data-{i}"));
        let mut s = Server::spawn(&cfg, &data_dir, &tmp.path().join(format!("cold-{i}.log")))?;
        let t = s.wait_ready(READY_TIMEOUT).await?;
        cold_ms.push(ms(t));
        eprintln!("cold start {i}/{STARTS}: {:.1} ms", ms(t));
        s.stop().await?;
    }
    let mut warm_ms = Vec::new();
    let mut server = None;
    for i in 1..=STARTS {
        let mut s = Server::spawn(&cfg, &data_dir, &tmp.path().join(format!("warm-{i}.log")))?;
        let t = s.wait_ready(READY_TIMEOUT).await?;
        warm_ms.push(ms(t));
        eprintln!("warm restart {i}/{STARTS}: {:.1} ms", ms(t));
        if i < STARTS {
            s.stop().await?;
        } else {
            // The last warm start is the server under load.
            server = Some(s);
        }
    }
    let server = server.ok_or_else(|| anyhow!("no server"))?;
    let pid = server.pid();

    // 2. Idle memory.
    tokio::time::sleep(IDLE_AFTER_START).await;
    let idle_after_start = procfs::memory(Proc::Pid(pid))?;
    eprintln!(
        "idle after start: VmRSS {} KiB, VmHWM {} KiB",
        idle_after_start.rss_kib, idle_after_start.hwm_kib
    );

    // 3. Tokens and the request of each scenario.
    let specs = prepare(&server).await?;
    let target = load::Target {
        addr: server.addr,
        server_pid: pid,
        ticks_per_sec: procfs::clock_ticks_per_sec(),
    };
    let duration = Duration::from_secs(args.duration);
    let mut scenarios = Vec::new();
    for (name, spec) in &specs {
        for &c in &concurrency {
            eprintln!(
                "running {name} with {c} client(s): {:?} warm-up + {duration:?}",
                WARMUP
            );
            let r = load::run(&target, name, spec.clone(), c, WARMUP, duration)
                .await
                .map_err(|e| anyhow!("{e:#}\nserver log tail:\n{}", server.log_tail()))?;
            eprintln!("  {:.0} req/s, {} errors", r.rps, r.errors);
            scenarios.push(r);
        }
    }

    tokio::time::sleep(IDLE_AFTER_LOAD).await;
    let idle_after_load = procfs::memory(Proc::Pid(pid))?;
    server.stop().await?;

    let results = Results {
        binary,
        cores,
        hash_rounds: args.hash_rounds,
        duration_s: args.duration,
        concurrency,
        cold_ms,
        warm_ms,
        idle_after_start,
        idle_after_load,
        scenarios,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report::json(&results))?);
    } else {
        print!("{}", report::table(&results));
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The binary to run: the path given, or, when the default path does not
/// exist (another CARGO_TARGET_DIR), the `ferrostack` beside this binary.
pub(crate) fn resolve_binary(given: &Path) -> anyhow::Result<PathBuf> {
    if given.is_file() {
        return Ok(given.to_path_buf());
    }
    if given == Path::new(crate::DEFAULT_FERROSTACK) {
        if let Some(sibling) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("ferrostack")))
            .filter(|p| p.is_file())
        {
            return Ok(sibling);
        }
    }
    bail!(
        "{} not found: build it with `cargo build --release -p ferrostack` or pass --ferrostack PATH",
        given.display()
    )
}

fn password_auth() -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
        "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}
    }})
}

fn token_auth(token: &str, project_id: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["token"], "token": {"id": token}},
        "scope": {"project": {"id": project_id}}
    }})
}

/// Issues a token; returns it and the response body.
async fn issue(conn: &mut Conn, body: &Value) -> anyhow::Result<(String, Value)> {
    let (status, headers, resp) = conn
        .send_full(&RequestSpec::post_json(TOKENS, body))
        .await?;
    ensure!(
        status.as_u16() == 201,
        "POST {TOKENS} answered {status}: {}",
        String::from_utf8_lossy(&resp)
    );
    let token = headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("no X-Subject-Token in the answer"))?
        .to_string();
    Ok((token, serde_json::from_slice(&resp)?))
}

/// An admin token (password method, scoped to the admin project) and that
/// project's id.
pub(crate) async fn admin_token(conn: &mut Conn) -> anyhow::Result<(String, String)> {
    let (token, body) = issue(conn, &password_auth()).await?;
    let project_id = body["token"]["project"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("no token.project.id in the token body: {body}"))?
        .to_string();
    Ok((token, project_id))
}

/// Gets an admin token (password) and a subject token (token method), checks
/// that every scenario's request succeeds once, and returns the requests.
async fn prepare(server: &Server) -> anyhow::Result<Vec<(String, RequestSpec)>> {
    let mut conn = Conn::connect(server.addr).await?;
    let (admin, project_id) = admin_token(&mut conn).await?;
    let (subject, _) = issue(&mut conn, &token_auth(&admin, &project_id)).await?;

    let validate = |path: &str| -> anyhow::Result<RequestSpec> {
        RequestSpec::get(path)
            .header("x-auth-token", &admin)?
            .header("x-subject-token", &subject)
    };
    let specs = vec![
        ("validate".to_string(), validate(TOKENS)?),
        (
            "validate-nocatalog".to_string(),
            validate(&format!("{TOKENS}?nocatalog"))?,
        ),
        (
            "issue-token-method".to_string(),
            RequestSpec::post_json(TOKENS, &token_auth(&subject, &project_id)),
        ),
        (
            "issue-password".to_string(),
            RequestSpec::post_json(TOKENS, &password_auth()),
        ),
    ];
    debug_assert_eq!(
        specs.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        SCENARIOS
    );
    // One of each, so that a broken request fails here with its answer, and
    // the catalog really is in one validation and not the other.
    for (name, spec) in &specs {
        let (status, resp) = conn.send(spec).await?;
        ensure!(
            status.is_success(),
            "{name}: {status}: {}",
            String::from_utf8_lossy(&resp)
        );
        let v: Value = serde_json::from_slice(&resp)?;
        let has_catalog = v["token"].get("catalog").is_some();
        match name.as_str() {
            "validate" => ensure!(has_catalog, "validate: no catalog in {v}"),
            "validate-nocatalog" => ensure!(!has_catalog, "?nocatalog still has a catalog"),
            _ => {}
        }
    }
    Ok(specs)
}
