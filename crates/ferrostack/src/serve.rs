//! `ferrostack serve`: opens the store, bootstraps, mounts every service
//! under its path prefix on one listener, and shuts down gracefully.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::routing::get;
use axum::Router;
use base64::Engine;
use serde_json::json;

use crate::cli::ServeArgs;

/// The services this binary serves, for the catalog.
const SERVICES: &[identity::CatalogService] = &[identity::CatalogService {
    kind: "identity",
    name: "keystone",
    path: "/identity",
}];

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    create_private_dir(&args.data_dir)?;
    let public_url = args.public_url.clone().unwrap_or_else(|| {
        let host = if args.listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            args.listen.ip().to_string()
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        format!("http://{host}:{}", args.listen.port())
    });
    let pool = store::open(&args.data_dir)
        .await
        .context("opening the database")?;
    let key_dir = args
        .key_repository
        .clone()
        .unwrap_or_else(|| args.data_dir.join("fernet-keys"));
    let keys = identity::Keys::open(key_dir.clone())
        .with_context(|| format!("opening the key repository {}", key_dir.display()))?;
    let cfg = identity::Config {
        public_url: public_url.clone(),
        token_expiration: args.token_expiration,
        password_hash_rounds: args.password_hash_rounds,
        lockout_failure_attempts: args.lockout_failure_attempts,
        lockout_duration: args.lockout_duration,
        ..Default::default()
    };
    let ident = identity::Identity::new(pool, cfg, keys)
        .await
        .map_err(|e| anyhow::anyhow!("starting identity: {e}"))?;
    let (password, generated) = match &args.admin_password {
        Some(p) => (p.clone(), false),
        None => {
            let raw: [u8; 18] = rand::random();
            (
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
                true,
            )
        }
    };
    let report = ident
        .bootstrap(&password, SERVICES)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    if report.created_admin || args.admin_password.is_some() {
        write_client_config(&args.data_dir, &public_url, &password)?;
        if report.created_admin && generated {
            // Printed once, on the terminal of the operator who started it;
            // it is also in the 0600 clouds.yaml.
            println!("Generated admin password: {password}");
        }
    }
    tracing::info!(
        clouds_yaml = %args.data_dir.join("clouds.yaml").display(),
        openrc = %args.data_dir.join("admin-openrc").display(),
        "client configuration for the admin"
    );

    tokio::spawn(ident.clone().watch());
    let app = router(ident.clone(), &public_url);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, public_url = %public_url, startup_ms = started.elapsed().as_millis() as u64, "ferrostack ready");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("ferrostack stopped");
    Ok(())
}

/// Every service under its prefix, plus a discovery document at `/`.
pub fn router(ident: Arc<identity::Identity>, public_url: &str) -> Router {
    let index = json!({
        "services": [
            {"type": "identity", "href": format!("{}/identity", public_url.trim_end_matches('/'))}
        ]
    });
    Router::new()
        .route("/", get(move || async move { axum::Json(index) }))
        .nest("/identity", identity::api::router(ident))
        .layer(axum::middleware::from_fn(api::request::request_id_and_log))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing requests in flight");
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes `clouds.yaml` (cloud `ferrostack`) and `admin-openrc`, mode 0600.
fn write_client_config(dir: &Path, public_url: &str, password: &str) -> anyhow::Result<()> {
    let auth_url = format!("{}/identity", public_url.trim_end_matches('/'));
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let clouds = format!(
        "clouds:\n  ferrostack:\n    auth:\n      auth_url: {}\n      username: admin\n      password: {}\n      project_name: admin\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    interface: public\n    identity_api_version: 3\n",
        q(&auth_url),
        q(password)
    );
    let sh = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let openrc = format!(
        "export OS_AUTH_URL={}\nexport OS_USERNAME=admin\nexport OS_PASSWORD={}\nexport OS_PROJECT_NAME=admin\nexport OS_USER_DOMAIN_NAME=Default\nexport OS_PROJECT_DOMAIN_NAME=Default\nexport OS_REGION_NAME=RegionOne\nexport OS_IDENTITY_API_VERSION=3\nexport OS_INTERFACE=public\n",
        sh(&auth_url),
        sh(password)
    );
    write_private(&dir.join("clouds.yaml"), &clouds)?;
    write_private(&dir.join("admin-openrc"), &openrc)?;
    Ok(())
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
