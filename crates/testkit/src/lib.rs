//! The whole stack in-process for tests: a fresh data directory, a listener
//! on port 0, cheap password hashing, and a small HTTP client that speaks
//! JSON. Each test gets its own [`Stack`]; nothing is shared.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

pub use ferrostack::serve::Settings;

/// The admin password every stack is bootstrapped with.
pub const ADMIN_PASSWORD: &str = "admin-secret";

/// A running stack; stopped and its data deleted on drop.
pub struct Stack {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub running: Option<ferrostack::serve::Running>,
    pub settings: Settings,
}

impl Stack {
    /// Starts a stack with test defaults (bcrypt cost 4).
    pub async fn start() -> Stack {
        Self::start_with(|_| {}).await
    }

    /// Starts a stack after letting the caller adjust the settings.
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> Stack {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Settings::new(dir.path().join("data"));
        s.listen = "127.0.0.1:0".parse().expect("address");
        s.admin_password = Some(ADMIN_PASSWORD.into());
        s.password_hash_rounds = 4;
        adjust(&mut s);
        let running = ferrostack::serve::start(s.clone())
            .await
            .expect("stack starts");
        Stack {
            addr: running.addr,
            dir,
            running: Some(running),
            settings: s,
        }
    }

    /// Stops the server and starts it again on the same data directory and
    /// port, as an operator's restart would.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.expect("clean stop");
        }
        let mut s = self.settings.clone();
        s.listen = self.addr;
        self.running = Some(ferrostack::serve::start(s).await.expect("stack restarts"));
    }

    pub fn identity(&self) -> &identity::Identity {
        &self.running.as_ref().expect("running").identity
    }

    /// The network service (which implements `netmodel::NetworkControl`).
    pub fn network(&self) -> std::sync::Arc<network::Network> {
        self.running.as_ref().expect("running").network.clone()
    }

    /// The data directory of the running stack.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.settings.data_dir.clone()
    }

    pub fn client(&self) -> Client {
        Client {
            base: format!("http://{}", self.addr),
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }
}

/// A response: status, headers, body parsed as JSON (Null when empty).
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

/// A response with its body as bytes.
#[derive(Debug)]
pub struct RawResp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    /// The body parsed as JSON (Null when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A JSON HTTP client for the stack.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    http: HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Client {
    /// Sends a request. `body` is sent as JSON unless it is a string, which
    /// is sent verbatim (for malformed-input tests).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            None => Bytes::new(),
            Some(Value::String(s)) => Bytes::from(s),
            Some(v) => Bytes::from(v.to_string()),
        };
        if !bytes.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = self
            .http
            .request(req.body(Full::new(bytes)).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let data = resp.into_body().collect().await.expect("body").to_bytes();
        let body = if data.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&data)
                .unwrap_or(Value::String(String::from_utf8_lossy(&data).into()))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Sends raw bytes with the given headers; returns the status, headers
    /// and raw body (for image data, which is not JSON).
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> RawResp {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("x-auth-token", t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .http
            .request(req.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        RawResp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), &[], None).await
    }
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), &[], Some(body))
            .await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), &[], Some(body))
            .await
    }
    pub async fn put(&self, path: &str, token: &str) -> Resp {
        self.call(Method::PUT, path, Some(token), &[], None).await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), &[], None)
            .await
    }

    /// Password authentication; returns the response (token in
    /// `x-subject-token` on success).
    pub async fn auth_password(&self, user: &str, password: &str, project: Option<&str>) -> Resp {
        let mut body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}}}});
        if let Some(p) = project {
            body["auth"]["scope"] = json!({"project": {"name": p, "domain": {"id": "default"}}});
        }
        self.call(
            Method::POST,
            "/identity/v3/auth/tokens",
            None,
            &[],
            Some(body),
        )
        .await
    }

    /// A project-scoped token, panicking if authentication fails.
    pub async fn token(&self, user: &str, password: &str, project: &str) -> String {
        let r = self.auth_password(user, password, Some(project)).await;
        assert_eq!(r.status, StatusCode::CREATED, "auth as {user}: {}", r.body);
        r.header("x-subject-token").expect("X-Subject-Token")
    }

    /// Creates `project` (if missing) and `user` with `password` holding the
    /// `role` on it; returns (project id, user id).
    pub async fn project_user(
        &self,
        admin: &str,
        project: &str,
        user: &str,
        password: &str,
        role: &str,
    ) -> (String, String) {
        let existing = self
            .get(&format!("/identity/v3/projects?name={project}"), admin)
            .await;
        let pid = match existing.body["projects"][0]["id"].as_str() {
            Some(id) => id.to_string(),
            None => {
                let p = self
                    .post(
                        "/identity/v3/projects",
                        admin,
                        json!({"project": {"name": project}}),
                    )
                    .await;
                assert_eq!(p.status, StatusCode::CREATED, "{}", p.body);
                p.body["project"]["id"].as_str().expect("id").to_string()
            }
        };
        let u = self
            .post(
                "/identity/v3/users",
                admin,
                json!({"user": {"name": user, "password": password, "default_project_id": pid}}),
            )
            .await;
        assert_eq!(u.status, StatusCode::CREATED, "{}", u.body);
        let uid = u.body["user"]["id"].as_str().expect("id").to_string();
        let roles = self
            .get(&format!("/identity/v3/roles?name={role}"), admin)
            .await;
        let rid = roles.body["roles"][0]["id"]
            .as_str()
            .expect("role")
            .to_string();
        let g = self
            .put(
                &format!("/identity/v3/projects/{pid}/users/{uid}/roles/{rid}"),
                admin,
            )
            .await;
        assert_eq!(g.status, StatusCode::NO_CONTENT);
        (pid, uid)
    }

    /// The admin's token on the admin project.
    pub async fn admin_token(&self) -> String {
        self.token("admin", ADMIN_PASSWORD, "admin").await
    }

    /// Validates `subject` with `as_token`: the status of GET /v3/auth/tokens.
    pub async fn validate(&self, as_token: &str, subject: &str) -> StatusCode {
        self.call(
            Method::GET,
            "/identity/v3/auth/tokens",
            Some(as_token),
            &[("x-subject-token", subject)],
            None,
        )
        .await
        .status
    }
}
