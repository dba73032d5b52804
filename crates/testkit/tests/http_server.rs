//! The HTTP server layer over a raw socket: slow and idle clients are
//! dropped, the connection limit holds, requests refused before routing get
//! the service's JSON error, and version discovery answers with a trailing
//! slash.

use std::time::{Duration, Instant};

use api::server::Limits;
use hyper::Method;
use serde_json::Value;
use testkit::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};

/// Limits small enough for a test to wait them out. Tests on a loaded
/// machine: a lower bound on when the server acts is measured from before
/// the client's first step, and an upper bound is generous (10 s), so that
/// a slow scheduler can neither make the server look early nor late.
fn short() -> Limits {
    Limits {
        header_timeout: Duration::from_secs(1),
        body_idle_timeout: Duration::from_secs(1),
        body_min_rate: 10,
        send_timeout: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(1),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(30),
    }
}

/// How long a test waits for something the server should do.
const WITHIN: Duration = Duration::from_secs(10);

async fn stack(limits: Limits) -> Stack {
    Stack::start_with(|s| s.http = limits).await
}

/// Reads until the server closes the connection; `None` if it is still open
/// after `within`. A reset counts as closed.
async fn read_until_closed(sock: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let r = timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    r.ok().map(|()| got)
}

/// A response read off a socket.
struct Answer {
    status: u16,
    head: String,
    body: Value,
}

fn parse(raw: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

/// Reads one response with a `content-length` body, leaving the
/// connection open.
async fn read_response(sock: &mut TcpStream) -> Answer {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = timeout(WITHIN, sock.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("reading");
        assert!(
            n > 0,
            "closed before a whole response: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("a length"))
            .unwrap_or(0);
        if raw.len() >= end + 4 + len {
            return parse(&raw[..end + 4 + len]);
        }
    }
}

const GET_IDENTITY: &[u8] = b"GET /identity HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn slowloris_and_silent_clients_are_dropped() {
    let s = stack(short()).await;
    // One header byte every 200 ms: never a whole head.
    let t0 = Instant::now();
    let sock = TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let trickle = tokio::spawn(async move {
        if wr
            .write_all(b"GET /identity HTTP/1.1\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        for _ in 0..100 {
            sleep(Duration::from_millis(200)).await;
            if wr.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    let closed = timeout(WITHIN, async {
        let mut buf = [0u8; 64];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a slowloris client is still connected");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    trickle.abort();
    // A client that connects and sends nothing.
    let mut silent = TcpStream::connect(s.addr).await.unwrap();
    let got = read_until_closed(&mut silent, WITHIN).await;
    assert_eq!(got, Some(Vec::new()), "a silent client is still connected");
}

#[tokio::test]
async fn stalled_body_is_answered_408_and_dropped() {
    let s = stack(Limits {
        header_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(10),
        ..short()
    })
    .await;
    let c = s.client();
    let token = c.admin_token().await;
    let image = c
        .post(
            "/image/v2/images",
            &token,
            serde_json::json!({"name": "stalled", "disk_format": "raw", "container_format": "bare"}),
        )
        .await;
    assert_eq!(image.status.as_u16(), 201, "{}", image.body);
    let id = image.body["id"].as_str().unwrap().to_string();
    let cases = [
        (
            "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\n\
             Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"auth\": "
                .to_string(),
            "keystone",
        ),
        // A streamed upload that stops sending.
        (
            format!(
                "PUT /image/v2/images/{id}/file HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n{}",
                "x".repeat(5000)
            ),
            "glance",
        ),
    ];
    for (head, style) in cases {
        let mut sock = TcpStream::connect(s.addr).await.unwrap();
        sock.write_all(head.as_bytes()).await.unwrap();
        let t0 = Instant::now();
        let raw = read_until_closed(&mut sock, WITHIN)
            .await
            .expect("a stalled body is dropped");
        assert!(
            t0.elapsed() >= Duration::from_millis(800),
            "{:?} {}",
            t0.elapsed(),
            String::from_utf8_lossy(&raw)
        );
        let a = parse(&raw);
        assert_eq!(a.status, 408, "{style}: {}", a.body);
        match style {
            "keystone" => assert_eq!(a.body["error"]["code"], 408, "{}", a.body),
            _ => assert_eq!(a.body["code"], "408 Request Timeout", "{}", a.body),
        }
        assert!(a.head.contains("connection: close"), "{}", a.head);
    }
    // The interrupted upload left the image as it was.
    let img = c.get(&format!("/image/v2/images/{id}"), &token).await;
    assert_eq!(img.body["status"], "queued", "{}", img.body);
}

#[tokio::test]
async fn idle_keepalive_connection_is_closed() {
    let s = stack(Limits {
        header_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(2),
        ..short()
    })
    .await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(GET_IDENTITY).await.unwrap();
    assert_eq!(read_response(&mut sock).await.status, 300);
    // The server's idle clock started before the client read the answer:
    // half the keep-alive timeout leaves room for a slow scheduler.
    let t0 = Instant::now();
    let rest = read_until_closed(&mut sock, WITHIN).await;
    assert_eq!(rest, Some(Vec::new()), "an idle connection stays open");
    let idle = t0.elapsed();
    assert!(idle >= Duration::from_secs(1), "closed after {idle:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_free_slot() {
    let s = stack(Limits {
        header_timeout: Duration::from_secs(30),
        max_connections: 2,
        ..short()
    })
    .await;
    for _ in 0..3 {
        let a = TcpStream::connect(s.addr).await.unwrap();
        let b = TcpStream::connect(s.addr).await.unwrap();
        // Both slots are held by connections that send nothing.
        sleep(Duration::from_millis(200)).await;
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(GET_IDENTITY).await.unwrap();
        let mut buf = [0u8; 1];
        let early = timeout(Duration::from_millis(700), c.read(&mut buf)).await;
        assert!(
            early.is_err(),
            "a third connection was served beyond the limit of 2"
        );
        drop(a);
        let a = read_response(&mut c).await;
        assert_eq!(a.status, 300);
        drop(b);
        drop(c);
    }
}

#[tokio::test]
async fn slow_but_steady_requests_and_keepalive_still_work() {
    // Every pause of the client is at most a quarter of the timeout it
    // must stay within, for a loaded machine.
    let s = stack(Limits {
        header_timeout: Duration::from_secs(2),
        body_idle_timeout: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(3),
        ..short()
    })
    .await;
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    // A body that keeps arriving, in pieces 500 ms apart, for longer than
    // the body idle timeout and the header timeout together.
    let body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": {"id": "default"}, "password": testkit::ADMIN_PASSWORD}}}}})
    .to_string();
    let head = format!(
        "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let t0 = Instant::now();
    for piece in body.as_bytes().chunks(body.len() / 9 + 1) {
        sleep(Duration::from_millis(500)).await;
        sock.write_all(piece).await.unwrap();
    }
    assert!(t0.elapsed() > Duration::from_secs(4));
    let a = read_response(&mut sock).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // The same connection serves the next request after a pause shorter
    // than the keep-alive timeout, and a head sent in pieces in time.
    sleep(Duration::from_millis(700)).await;
    for piece in GET_IDENTITY.chunks(12) {
        sock.write_all(piece).await.unwrap();
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_response(&mut sock).await.status, 300);
}

/// Creates an active image of `size` bytes; returns its id and a token.
async fn big_image(s: &Stack, size: usize) -> (String, String) {
    let c = s.client();
    let token = c.admin_token().await;
    let image = c
        .post(
            "/image/v2/images",
            &token,
            serde_json::json!({"name": "big", "disk_format": "raw",
                "container_format": "bare", "visibility": "public"}),
        )
        .await;
    assert_eq!(image.status.as_u16(), 201, "{}", image.body);
    let id = image.body["id"].as_str().unwrap().to_string();
    let up = c
        .call_raw(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(&token),
            &[("content-type", "application/octet-stream")],
            vec![b'x'; size].into(),
        )
        .await;
    assert_eq!(up.status.as_u16(), 204, "{:?}", up.body);
    (id, token)
}

/// GETs `/identity` on a new connection: the server answers within
/// [`WITHIN`].
async fn served(s: &Stack) {
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(GET_IDENTITY).await.unwrap();
    assert_eq!(read_response(&mut sock).await.status, 300);
}

#[tokio::test]
async fn a_client_that_stops_reading_a_download_loses_its_slot() {
    let mut s = stack(Limits::default()).await;
    let size = 24 << 20;
    let (id, token) = big_image(&s, size).await;
    // The only slot, and a response that stops making progress for 1 s
    // closes its connection.
    s.settings.http = Limits {
        send_timeout: Duration::from_secs(1),
        max_connections: 1,
        header_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(30),
        ..short()
    };
    s.restart().await;
    // A small receive buffer, so that the server's writes stall soon.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(s.addr).await.unwrap();
    stalled
        .write_all(
            format!(
                "GET /image/v2/images/{id}/file HTTP/1.1\r\nHost: t\r\nX-Auth-Token: {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Give the download time to start and fill the buffers.
    sleep(Duration::from_millis(300)).await;
    served(&s).await;
    // The stalled download was cut short.
    let got = read_until_closed(&mut stalled, WITHIN)
        .await
        .expect("the stalled download is closed");
    assert!(got.len() < size, "the whole image arrived: {}", got.len());
}

#[tokio::test]
async fn a_trickling_body_is_cut_by_its_minimum_rate() {
    let s = stack(Limits {
        header_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(30),
        body_idle_timeout: Duration::from_secs(1),
        body_min_rate: 100,
        ..short()
    })
    .await;
    let sock = TcpStream::connect(s.addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    let t0 = Instant::now();
    wr.write_all(
        b"POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\n\
          Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n",
    )
    .await
    .unwrap();
    // A byte every 200 ms: never idle for the body idle timeout, but
    // 5 bytes a second.
    let trickle = tokio::spawn(async move {
        for _ in 0..10000 {
            if wr.write_all(b" ").await.is_err() {
                return;
            }
            sleep(Duration::from_millis(200)).await;
        }
    });
    let mut raw = Vec::new();
    let closed = timeout(WITHIN, rd.read_to_end(&mut raw)).await;
    trickle.abort();
    assert!(closed.is_ok(), "a trickling body is still being read");
    assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    let a = parse(&raw);
    assert_eq!(a.status, 408, "{}", a.body);
    assert_eq!(a.body["error"]["code"], 408, "{}", a.body);
}

#[tokio::test]
async fn shutdown_closes_connections_left_after_the_grace_period() {
    let mut s = stack(Limits {
        header_timeout: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(60),
        body_idle_timeout: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(1),
        ..short()
    })
    .await;
    // A request in flight whose body stops coming.
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(
        b"POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\n\
          Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
    )
    .await
    .unwrap();
    sleep(Duration::from_millis(300)).await;
    let running = s.running.take().expect("running");
    timeout(WITHIN, running.stop())
        .await
        .expect("shutdown is bounded by the grace period")
        .expect("clean stop");
    assert!(read_until_closed(&mut sock, WITHIN).await.is_some());
}

#[tokio::test]
async fn slots_are_freed_when_the_server_ends_a_connection() {
    let s = stack(Limits {
        max_connections: 1,
        ..short()
    })
    .await;
    // A head that never ends.
    let mut slow = TcpStream::connect(s.addr).await.unwrap();
    slow.write_all(b"GET /identity HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    read_until_closed(&mut slow, WITHIN)
        .await
        .expect("a slowloris client is dropped");
    served(&s).await;
    // A refused head.
    let a = refused(
        &s,
        b"GET /identity/x HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    served(&s).await;
    // A body that stops coming.
    let mut stalled = TcpStream::connect(s.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\n\
              Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
        )
        .await
        .unwrap();
    let raw = read_until_closed(&mut stalled, WITHIN)
        .await
        .expect("a stalled body is dropped");
    assert_eq!(parse(&raw).status, 408);
    served(&s).await;
}

#[tokio::test]
async fn expect_100_continue_passes_the_gate() {
    let s = stack(Limits {
        max_connections: 1,
        ..short()
    })
    .await;
    let body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": {"id": "default"}, "password": testkit::ADMIN_PASSWORD}}}}})
    .to_string();
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(
        format!(
            "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The interim answer comes before the body is sent.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        let n = timeout(WITHIN, sock.read(&mut byte))
            .await
            .expect("a 100 Continue in time")
            .unwrap();
        assert_eq!(n, 1, "closed: {:?}", String::from_utf8_lossy(&interim));
        interim.push(byte[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{:?}",
        String::from_utf8_lossy(&interim)
    );
    sock.write_all(body.as_bytes()).await.unwrap();
    let a = read_response(&mut sock).await;
    assert_eq!(a.status, 201, "{}", a.body);
    // The connection stays usable.
    sock.write_all(GET_IDENTITY).await.unwrap();
    assert_eq!(read_response(&mut sock).await.status, 300);
}

/// Sends `raw` on a new connection and reads the answer to the end.
async fn refused(s: &Stack, raw: &[u8]) -> Answer {
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(raw).await.unwrap();
    let got = read_until_closed(&mut sock, WITHIN)
        .await
        .expect("the connection is closed after a refusal");
    assert!(
        !got.is_empty(),
        "no answer to {:?}",
        String::from_utf8_lossy(&raw[..raw.len().min(80)])
    );
    parse(&got)
}

#[tokio::test]
async fn requests_refused_before_routing_get_the_services_error_body() {
    let s = stack(Limits::default()).await;
    let huge_url = "a".repeat(200 * 1024);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "b".repeat(100 * 1024));
    for prefix in ["/identity", "/image", "/network"] {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (
                format!("GET {prefix}/x HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n").into(),
                400,
            ),
            (
                format!("POST {prefix}/x HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n").into(),
                400,
            ),
            (
                format!(
                    "POST {prefix}/x HTTP/1.1\r\nHost: t\r\n\
                     Content-Length: 99999999999999999999999\r\n\r\n"
                )
                .into(),
                400,
            ),
            (
                format!("GET {prefix}/{huge_url} HTTP/1.1\r\nHost: t\r\n\r\n").into(),
                414,
            ),
            (
                format!("GET {prefix}/x HTTP/1.1\r\nHost: t\r\n{many}\r\n").into(),
                431,
            ),
            (
                format!("GET {prefix}/x HTTP/1.1\r\nHost: t\r\n{huge_header}\r\n").into(),
                431,
            ),
        ];
        for (raw, want) in cases {
            let a = refused(&s, &raw).await;
            let what = format!("{prefix} {want}: {}", a.body);
            assert_eq!(a.status, want, "{what}");
            assert!(a.head.contains("content-type: application/json"), "{what}");
            assert!(a.head.contains("x-openstack-request-id: req-"), "{what}");
            match prefix {
                "/identity" => {
                    assert_eq!(a.body["error"]["code"], want, "{what}");
                    assert!(a.body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()));
                }
                "/image" => {
                    let code = a.body["code"].as_str().unwrap_or_default();
                    assert!(code.starts_with(&want.to_string()), "{what}");
                    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()));
                }
                _ => {
                    assert!(a.body["NeutronError"]["type"].is_string(), "{what}");
                    assert!(a.body["NeutronError"]["message"]
                        .as_str()
                        .is_some_and(|m| !m.is_empty()));
                }
            }
        }
    }
    // The server is still serving.
    let mut sock = TcpStream::connect(s.addr).await.unwrap();
    sock.write_all(GET_IDENTITY).await.unwrap();
    assert_eq!(read_response(&mut sock).await.status, 300);
}

#[tokio::test]
async fn version_discovery_answers_with_and_without_a_trailing_slash() {
    let s = stack(Limits::default()).await;
    let c = s.client();
    for root in ["/identity", "/image", "/network"] {
        let bare = c.call(Method::GET, root, None, &[], None).await;
        let slash = c
            .call(Method::GET, &format!("{root}/"), None, &[], None)
            .await;
        assert!(
            bare.status.is_success() || bare.status.as_u16() == 300,
            "{root}: {}",
            bare.status
        );
        assert_eq!(slash.status, bare.status, "{root}/");
        assert_eq!(slash.body, bare.body, "{root}/");
        assert!(
            slash.body.get("versions").is_some(),
            "{root}/: {}",
            slash.body
        );
    }
}

#[tokio::test]
async fn pipelined_requests_are_each_checked_at_their_own_head() {
    let s = stack(Limits::default()).await;
    let body = serde_json::json!({"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": "admin", "domain": {"id": "default"}, "password": testkit::ADMIN_PASSWORD}}}}})
    .to_string();
    let bad = "GET /network/v2.0 HTTP/1.1\r\nHost: t\r\nX-Bad: a\x01b\r\n\r\n";
    let cases = [
        // A body before the next head is not taken for a head.
        (
            format!(
                "POST /identity/v3/auth/tokens HTTP/1.1\r\nHost: t\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}\
                 GET /identity HTTP/1.1\r\nHost: t\r\n\r\n{bad}",
                body.len()
            ),
            vec![201, 300, 400],
        ),
        // A bad head right behind a good one waits for the good one's
        // answer.
        (
            format!("GET /identity HTTP/1.1\r\nHost: t\r\n\r\n{bad}"),
            vec![300, 400],
        ),
    ];
    for _ in 0..20 {
        for (raw, want) in &cases {
            let mut sock = TcpStream::connect(s.addr).await.unwrap();
            sock.write_all(raw.as_bytes()).await.unwrap();
            let all = read_until_closed(&mut sock, WITHIN)
                .await
                .expect("closed after the refusal");
            let answers = split_responses(&all);
            let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
            assert_eq!(&statuses, want);
            let refusal = answers.last().expect("answers");
            assert_eq!(
                refusal.body["NeutronError"]["type"], "BadRequest",
                "{}",
                refusal.body
            );
        }
    }
}

/// Splits responses sent back to back, each with a `content-length` body.
fn split_responses(mut raw: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().expect("a length"))
            .unwrap_or(0);
        out.push(parse(&raw[..end + 4 + len]));
        raw = &raw[end + 4 + len..];
    }
    out
}
