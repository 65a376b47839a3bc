//! The HTTP edge: which host the hub answers as (the development sign-in and the websocket's
//! Origin check against DNS rebinding and forged forwarding headers), 405 with `Allow` on
//! every resource, problem+json for every error under every path, and the protective headers
//! of the page and the API.

use std::collections::BTreeSet;

use reqwest::{Method, Response};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{handshake::client::Request, http::HeaderName};

use crate::helpers::http::*;
use crate::helpers::ws::{member, refused, request, try_open};
use crate::helpers::*;

/// A request to `path` on `app` with the `Host` header set to `host`.
async fn with_host(app: &TestApp, method: Method, path: &str, host: &str, body: Option<Value>) -> Response {
    let mut req = app.client.request(method, app.url(path)).header("Host", host);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("the hub answers")
}

fn sign_in_body() -> Value {
    json!({"sub": "sam", "tenant": "acme", "roles": ["user"], "locations": ["L1"]})
}

/// A hub on the development secret, bound to 127.0.0.1 (the one-click sign-in is offered).
async fn dev_hub() -> TestApp {
    spawn_app_with(|s| s.auth.hs256_secret = switchboard::config::DEV_SECRET.into()).await
}

/// A websocket handshake with `Host` and `Origin` as given (and a valid token).
fn handshake(app: &TestApp, host: &str, origin: &str, extra: &[(&str, &str)]) -> Request {
    let mut req = request(&app.ws_url(), Some(&member("sam")), Some(origin));
    let headers = req.headers_mut();
    headers.insert("Host", host.parse().unwrap());
    for (k, v) in extra {
        headers.insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    req
}

// ---------------------------------------------------------------------------------------
// The development sign-in and DNS rebinding

#[tokio::test]
async fn the_dev_sign_in_answers_404_to_a_host_name_that_is_not_loopback() {
    let app = dev_hub().await;
    let rebound = format!("rebind.attacker.example:{}", app.port);

    let r = with_host(&app, Method::GET, "/api/v1/dev/token", &rebound, None).await;
    problem(r, 404).await;
    let r = with_host(&app, Method::POST, "/api/v1/dev/token", &rebound, Some(sign_in_body())).await;
    let body = problem(r, 404).await;
    assert!(body.get("token").is_none(), "no token minted: {body}");
}

#[tokio::test]
async fn the_dev_sign_in_answers_localhost_127_0_0_1_and_ipv6_loopback_on_the_bound_port() {
    let app = dev_hub().await;
    for name in ["localhost", "127.0.0.1", "[::1]", "LocalHost"] {
        let host = format!("{name}:{}", app.port);
        let r = with_host(&app, Method::GET, "/api/v1/dev/token", &host, None).await;
        assert_eq!(r.status(), 200, "GET with Host {host}");
        let r = with_host(&app, Method::POST, "/api/v1/dev/token", &host, Some(sign_in_body())).await;
        assert_eq!(r.status(), 200, "POST with Host {host}");
        assert_eq!(
            r.headers().get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "a minted token is not cached"
        );
        let minted: Value = r.json().await.unwrap();
        let token = minted["token"].as_str().expect("a token");
        assert_eq!(get_ok(&app, "/api/v1/me", token).await["user_id"], "sam");
    }
}

#[tokio::test]
async fn the_dev_sign_in_answers_404_to_a_loopback_name_with_another_port() {
    let app = dev_hub().await;
    let other = format!("127.0.0.1:{}", app.port.wrapping_add(1).max(1));
    problem(
        with_host(&app, Method::GET, "/api/v1/dev/token", &other, None).await,
        404,
    )
    .await;
    problem(
        with_host(&app, Method::GET, "/api/v1/dev/token", "localhost", None).await,
        404,
    )
    .await;
}

#[tokio::test]
async fn the_dev_sign_in_ignores_forwarding_headers_even_from_a_trusted_proxy() {
    let app = spawn_app_with(|s| {
        s.auth.hs256_secret = switchboard::config::DEV_SECRET.into();
        s.server.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    // A page that rebinding made same-origin with the hub may add these to its own fetches.
    let r = app
        .client
        .get(app.url("/api/v1/dev/token"))
        .header("Host", format!("rebind.attacker.example:{}", app.port))
        .header("X-Forwarded-Host", format!("localhost:{}", app.port))
        .header("Forwarded", format!("host=\"localhost:{}\"", app.port))
        .send()
        .await
        .unwrap();
    problem(r, 404).await;
}

#[tokio::test]
async fn a_websocket_from_a_rebinding_host_and_origin_is_refused_with_403_before_the_upgrade() {
    let app = spawn_app().await;
    let rebound = format!("rebind.attacker.example:{}", app.port);

    let r = refused(handshake(&app, &rebound, &format!("http://{rebound}"), &[])).await;

    assert_eq!(r.status, 403, "{r:?}");
    assert!(r.content_type.starts_with("application/problem+json"), "{r:?}");
    assert_problem_fields(&r.body, 403);
}

#[tokio::test]
async fn a_websocket_from_localhost_on_a_loopback_bind_is_accepted_whatever_the_port() {
    let app = spawn_app().await;
    // As nginx on loopback passes it on: its own port, not the node's.
    for host in [format!("localhost:{}", app.port), "127.0.0.1:9".to_owned()] {
        let opened = try_open(handshake(&app, &host, &format!("http://{host}"), &[])).await;
        let (_ws, hello) = opened.unwrap_or_else(|r| panic!("Host {host} was refused: {r:?}"));
        assert_eq!(hello["user_id"], "sam");
    }
}

// ---------------------------------------------------------------------------------------
// Forwarding headers and trusted proxies

const EVIL: &str = "https://evil.example";

fn forged() -> [Vec<(&'static str, &'static str)>; 3] {
    [
        vec![("X-Forwarded-Host", "evil.example")],
        vec![("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Proto", "https")],
        vec![("Forwarded", "host=evil.example;proto=https")],
    ]
}

#[tokio::test]
async fn forwarding_headers_do_not_make_a_foreign_origin_the_hubs_own_without_trusted_proxies() {
    let app = spawn_app().await;
    let host = format!("127.0.0.1:{}", app.port);
    for extra in forged() {
        let r = refused(handshake(&app, &host, EVIL, &extra)).await;
        assert_eq!(r.status, 403, "{extra:?}: {r:?}");
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_peer_outside_the_trusted_proxies_are_ignored() {
    let app = spawn_app_with(|s| s.server.trusted_proxies = vec!["10.0.0.0/8".into(), "192.0.2.7".into()]).await;
    let host = format!("127.0.0.1:{}", app.port);
    for extra in forged() {
        let r = refused(handshake(&app, &host, EVIL, &extra)).await;
        assert_eq!(r.status, 403, "{extra:?}: {r:?}");
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_proxy_name_the_hubs_host_and_scheme() {
    let app = spawn_app_with(|s| s.server.trusted_proxies = vec!["127.0.0.0/8".into()]).await;
    let host = format!("127.0.0.1:{}", app.port);
    for extra in forged() {
        let opened = try_open(handshake(&app, &host, EVIL, &extra)).await;
        assert!(opened.is_ok(), "{extra:?}: {:?}", opened.err());
    }
    // The proxy said https: the same host over http is not the hub's origin.
    let r = refused(handshake(
        &app,
        &host,
        "http://evil.example",
        &[("Forwarded", "host=evil.example;proto=https")],
    ))
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // The proxy named another host: the Origin must be that one.
    let r = refused(handshake(&app, &host, EVIL, &[("X-Forwarded-Host", "app.example")])).await;
    assert_eq!(r.status, 403, "{r:?}");
}

#[tokio::test]
async fn an_entry_of_trusted_proxies_that_is_no_address_stops_serve_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .current_dir(dir.path())
        .env("SWITCHBOARD__SERVER__BIND", "127.0.0.1:0")
        .env("SWITCHBOARD__STORAGE__PATH", dir.path().join("data"))
        .env("SWITCHBOARD__SERVER__TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
        .env_remove("RUST_LOG")
        .output()
        .expect("switchboard runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve refused to start: {stderr}");
    assert!(
        stderr.contains("server.trusted_proxies") && stderr.contains("\"proxy.internal\""),
        "the message names the key and the entry: {stderr}"
    );

    let data = tempfile::tempdir().unwrap();
    let mut settings = test_settings(data.path());
    settings.server.trusted_proxies = vec!["10.0.0.0/33".into()];
    let err = switchboard::startup::Application::build(settings)
        .await
        .err()
        .expect("a prefix over 32 bits is refused");
    assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
}

// ---------------------------------------------------------------------------------------
// 405 with Allow, and problem+json everywhere

/// Every path the hub serves and the methods it takes.
const RESOURCES: &[(&str, &[&str])] = &[
    ("/healthz", &["GET"]),
    ("/readyz", &["GET"]),
    ("/metrics", &["GET"]),
    ("/ws", &["GET"]),
    ("/api/v1/dev/token", &["GET", "POST"]),
    ("/api/v1/locations/L1", &["PUT"]),
    ("/api/v1/users/u1", &["PUT"]),
    ("/api/v1/folders", &["GET"]),
    ("/api/v1/folders/F1", &["GET", "PUT"]),
    ("/api/v1/folders/F1/messages", &["GET"]),
    ("/api/v1/folders/F1/photos", &["GET"]),
    ("/api/v1/preferences", &["GET", "PUT"]),
    ("/api/v1/messages/inbound", &["POST"]),
    ("/api/v1/messages/m1/link-images", &["POST"]),
    ("/api/v1/me", &["GET"]),
    ("/api/v1/me/subscriptions", &["PUT"]),
    ("/api/v1/resources", &["GET"]),
    ("/api/v1/threads", &["GET"]),
    ("/api/v1/threads/t1", &["GET"]),
    ("/api/v1/threads/t1/messages", &["GET"]),
    ("/api/v1/threads/t1/read", &["POST"]),
    ("/api/v1/threads/t1/unread", &["POST"]),
    ("/api/v1/threads/t1/replies", &["POST"]),
    ("/api/v1/threads/t1/assign", &["POST"]),
    ("/", &["GET", "HEAD"]),
    ("/message-center.js", &["GET", "HEAD"]),
];

fn allow_of(r: &Response) -> BTreeSet<String> {
    let allow = r
        .headers()
        .get("allow")
        .unwrap_or_else(|| panic!("a 405 carries Allow: {r:?}"))
        .to_str()
        .unwrap();
    allow.split(',').map(|m| m.trim().to_owned()).collect()
}

#[tokio::test]
async fn every_resource_answers_a_method_it_does_not_take_with_a_405_problem_listing_the_ones_it_does() {
    let app = spawn_app().await;
    let tok = user_token("olga", &["L1"]);
    for (path, allowed) in RESOURCES {
        let want: BTreeSet<String> = allowed.iter().map(|m| m.to_string()).collect();
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = app
                .client
                .request(m, app.url(path))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap();
            if allowed.contains(&method) {
                assert_ne!(r.status(), 405, "{method} {path} is taken");
                continue;
            }
            assert_eq!(allow_of(&r), want, "Allow of {method} {path}");
            let body = problem(r, 405).await;
            assert!(
                body["detail"].as_str().unwrap().contains(method),
                "the detail names the method: {body}"
            );
        }
    }
}

#[tokio::test]
async fn unknown_paths_under_the_api_the_websocket_and_the_page_are_404_problems() {
    let app = spawn_app().await;
    let tok = user_token("olga", &["L1"]);
    for path in [
        "/api/v1/no-such-thing",
        "/api/v2/threads",
        "/api/",
        "/api",
        "/ws/x",
        "/ws/",
        "/no-such-file.js",
        "/static/index.html",
    ] {
        problem(app.get(path, &tok).await, 404).await;
    }
}

#[tokio::test]
async fn a_path_the_static_files_refuse_and_a_method_they_do_not_take_are_problems() {
    let app = spawn_app().await;

    let r = app.client.get(app.url("/..%2fCargo.toml")).send().await.unwrap();
    let status = r.status().as_u16();
    assert!(status == 400 || status == 404, "{status}");
    let body = problem(r, status).await;
    assert!(
        !body.to_string().contains("[package]"),
        "nothing of Cargo.toml is served: {body}"
    );

    let r = app.client.delete(app.url("/")).send().await.unwrap();
    assert_eq!(allow_of(&r), BTreeSet::from(["GET".to_owned(), "HEAD".to_owned()]));
    problem(r, 405).await;
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf_8_is_a_problem_naming_the_id() {
    let app = spawn_app().await;
    let (status, body) = get(&app, "/api/v1/threads/%FF", &user_token("olga", &["L1"])).await;
    assert_invalid(status, &body, "id");
    let r = app
        .put("/api/v1/users/%C3%28", &service_token(), json!({"name": "U"}))
        .await;
    let body = problem(r, 422).await;
    assert_eq!(body["field"], "id", "{body}");
}

#[tokio::test]
async fn a_websocket_handshake_without_an_upgrade_is_a_400_problem() {
    let app = spawn_app().await;
    let r = app.get("/ws", &user_token("olga", &["L1"])).await;
    let body = problem(r, 400).await;
    assert_ne!(body["title"], "Malformed JSON", "{body}");
}

// ---------------------------------------------------------------------------------------
// Protective headers

fn header<'a>(r: &'a Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} on {}: {:?}", r.url(), r.headers()))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_carry_a_content_security_policy_and_the_protective_headers() {
    let app = spawn_app().await;
    for path in ["/", "/message-center.js", "/message-center.css", "/no-such-file.png"] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        let csp = header(&r, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' http: https:",
            &format!("connect-src 'self' ws://127.0.0.1:{0} wss://127.0.0.1:{0}", app.port),
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive} in {csp}");
        }
        assert!(!csp.contains("unsafe-"), "{path}: {csp}");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&r, "referrer-policy"), "no-referrer", "{path}");
        assert_eq!(header(&r, "x-frame-options"), "DENY", "{path}");
    }
}

#[tokio::test]
async fn a_page_requested_under_a_rebinding_host_gets_no_websocket_source_for_that_host() {
    let app = spawn_app().await;
    let r = with_host(
        &app,
        Method::GET,
        "/",
        &format!("rebind.attacker.example:{}", app.port),
        None,
    )
    .await;
    let csp = header(&r, "content-security-policy");
    assert!(!csp.contains("rebind"), "{csp}");
    assert!(csp.contains("connect-src 'self';"), "{csp}");
}

#[tokio::test]
async fn api_responses_and_errors_carry_nosniff() {
    let app = spawn_app().await;
    let tok = user_token("olga", &["L1"]);
    let answers = [
        app.get("/api/v1/me", &tok).await,
        app.call(Method::GET, "/api/v1/me", None, None).await,
        app.get("/api/v1/threads/t_unknown", &tok).await,
        app.call(Method::DELETE, "/api/v1/me", Some(&tok), None).await,
        app.get("/api/v1/nope", &tok).await,
        app.client.get(app.url("/healthz")).send().await.unwrap(),
        app.client.get(app.url("/metrics")).send().await.unwrap(),
    ];
    for r in &answers {
        assert_eq!(header(r, "x-content-type-options"), "nosniff", "{}", r.url());
    }
}
