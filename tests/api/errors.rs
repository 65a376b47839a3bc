//! Errors: every error status of the contract is an RFC 9457 problem
//! (`application/problem+json` with `type`, `title`, `status`, `detail`), and a failed call
//! stores nothing.
//!
//! A 503 from a storage outage cannot be provoked on the embedded store; the 503 tested
//! (in websocket.rs) is the session cap.

use reqwest::{Method, Response};
use serde_json::json;
use switchboard::auth::{TokenSpec, mint_hs256, now_secs};

use crate::helpers::http::*;
use crate::helpers::*;

/// A request with a raw body and content type.
async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Response {
    app.client
        .request(method, app.url(path))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the hub answers (it must not reset the connection)")
}

async fn with_authorization(app: &TestApp, path: &str, value: Option<&str>) -> Response {
    let mut req = app.client.get(app.url(path));
    if let Some(v) = value {
        req = req.header("authorization", v);
    }
    req.send().await.expect("request sent")
}

fn olga() -> String {
    user_token("olga", &["L1"])
}

fn folder_body(phones: serde_json::Value) -> serde_json::Value {
    json!({"name": "Folder", "location_id": "L1", "phone_numbers": phones,
           "sales_resource_id": null, "service_resource_id": null})
}

// ---------------------------------------------------------------------------------------
// 400

#[tokio::test]
async fn malformed_json_is_a_400_problem() {
    let app = spawn_app().await;
    app.seed().await;
    let r = raw(
        &app,
        Method::PUT,
        "/api/v1/users/u1",
        &service_token(),
        "application/json",
        r#"{"name": "#,
    )
    .await;
    problem(r, 400).await;
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/messages/inbound",
        &service_token(),
        "application/json",
        "{not json}",
    )
    .await;
    problem(r, 400).await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let r = raw(
        &app,
        Method::POST,
        &format!("/api/v1/threads/{t}/replies"),
        &olga(),
        "application/json",
        "[1, 2,",
    )
    .await;
    problem(r, 400).await;
    let r = raw(
        &app,
        Method::PUT,
        "/api/v1/preferences",
        &service_token(),
        "application/json",
        "",
    )
    .await;
    problem(r, 400).await;
    let page = get_ok(&app, &format!("/api/v1/threads/{t}/messages"), &olga()).await;
    assert_eq!(
        page["messages"].as_array().unwrap().len(),
        1,
        "the malformed reply stored nothing"
    );
}

// ---------------------------------------------------------------------------------------
// 401

#[tokio::test]
async fn a_missing_token_is_a_401_problem() {
    let app = spawn_app().await;
    problem(with_authorization(&app, "/api/v1/me", None).await, 401).await;
    let r = app
        .call(Method::PUT, "/api/v1/users/u1", None, Some(json!({"name": "U"})))
        .await;
    problem(r, 401).await;
    let r = app
        .call(Method::POST, "/api/v1/messages/inbound", None, Some(json!({})))
        .await;
    problem(r, 401).await;
}

#[tokio::test]
async fn a_malformed_token_is_a_401_problem() {
    let app = spawn_app().await;
    for value in [
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer",
    ] {
        let r = with_authorization(&app, "/api/v1/me", Some(value)).await;
        problem(r, 401).await;
    }
}

#[tokio::test]
async fn a_badly_signed_token_is_a_401_problem() {
    let app = spawn_app().await;
    let other = mint_hs256("another-secret", &TokenSpec::new("olga", TENANT, &["user"], &["L1"]));
    problem(app.get("/api/v1/me", &other).await, 401).await;

    // A good token whose payload was swapped for another user's keeps a signature that no longer matches.
    let good = olga();
    let admin = token("olga", &["admin"], &["L1", "L2"]);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], admin.split('.').nth(1).unwrap(), parts[2]);
    problem(app.get("/api/v1/me", &forged).await, 401).await;
    assert_eq!(get_ok(&app, "/api/v1/me", &good).await["user_id"], "olga");
}

#[tokio::test]
async fn an_expired_token_is_a_401_problem() {
    let app = spawn_app().await;
    let claims =
        json!({"sub": "olga", "tenant": TENANT, "roles": ["user"], "locations": ["L1"], "exp": now_secs() - 3600});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    problem(app.get("/api/v1/me", &expired).await, 401).await;
}

// ---------------------------------------------------------------------------------------
// 403

#[tokio::test]
async fn a_wrong_role_or_location_is_a_403_problem() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    problem(app.put("/api/v1/users/u1", &olga(), json!({"name": "U"})).await, 403).await;
    problem(app.get("/api/v1/me", &service_token()).await, 403).await;
    problem(
        app.get(&format!("/api/v1/threads/{t}"), &user_token("olga", &["L2"]))
            .await,
        403,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 404

#[tokio::test]
async fn an_unknown_id_is_a_404_problem() {
    let app = spawn_app().await;
    app.seed().await;
    problem(app.get("/api/v1/threads/t_unknown", &olga()).await, 404).await;
    problem(app.get("/api/v1/folders/F404", &olga()).await, 404).await;
    problem(app.get("/api/v1/folders/F404/photos", &olga()).await, 404).await;
    problem(
        app.post("/api/v1/messages/m_unknown/link-images", &olga(), json!({}))
            .await,
        404,
    )
    .await;
    problem(
        app.post("/api/v1/threads/t_unknown/replies", &olga(), json!({"body": "hi"}))
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    problem(app.get("/api/v1/no-such-thing", &olga()).await, 404).await;
}

// ---------------------------------------------------------------------------------------
// 409

#[tokio::test]
async fn linking_images_without_a_folder_is_a_409_problem() {
    let app = spawn_app().await;
    app.seed().await;
    let m = message_id(
        &ingest_json(
            &app,
            json!({"external_id": "SM1", "from": "+15559990000", "to": L1_SMS, "body": "",
                   "attachments": [{"url": "https://media.example/1.jpg", "content_type": "image/jpeg"}]}),
        )
        .await,
    );
    problem(
        app.post(&format!("/api/v1/messages/{m}/link-images"), &olga(), json!({}))
            .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn an_sms_number_held_by_another_location_is_a_409_problem_and_changes_nothing() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let r = app
        .put(
            "/api/v1/locations/L2",
            &service_token(),
            json!({"name": "L2", "sms_numbers": ["(555) 000-1111"]}),
        )
        .await;
    problem(r, 409).await;
    let (status, body) = app.inbound("SM1", CUSTOMER, L1_SMS, "hi").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["thread"]["location_id"], "L1", "the number still belongs to L1");
}

// ---------------------------------------------------------------------------------------
// 413

#[tokio::test]
async fn a_body_over_the_configured_limit_is_a_413_problem() {
    let app = spawn_app_with(|s| s.server.max_body_bytes = 1024).await;
    app.seed().await;
    let small = json!({"name": "Short"}).to_string();
    assert_eq!(
        raw(
            &app,
            Method::PUT,
            "/api/v1/users/u1",
            &service_token(),
            "application/json",
            small
        )
        .await
        .status(),
        200
    );

    let big = json!({"name": "x".repeat(3000)}).to_string();
    problem(
        raw(
            &app,
            Method::PUT,
            "/api/v1/users/u2",
            &service_token(),
            "application/json",
            big,
        )
        .await,
        413,
    )
    .await;

    let big = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "y".repeat(3000)}).to_string();
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/messages/inbound",
        &service_token(),
        "application/json",
        big,
    )
    .await;
    problem(r, 413).await;
    assert!(
        mine(&app, &user_token("sam", &["L1"])).await.is_empty(),
        "the refused message was not stored"
    );
}

#[tokio::test]
async fn the_default_body_limit_is_256_kib() {
    let app = spawn_app().await;
    app.seed().await;
    // Just over 256 KiB. Sent over a raw socket that reads the answer while the body is still
    // being written: a hub may answer 413 and close before reading it all, which an HTTP
    // client such as reqwest reports as a broken pipe instead of the answer.
    let over = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "z".repeat(262_144)}).to_string();
    let (status, content_type, body) =
        early_answer::post(app.port, "/api/v1/messages/inbound", &service_token(), over).await;
    assert_eq!(status, 413, "{body}");
    assert!(content_type.starts_with("application/problem+json"), "{content_type}");
    assert_problem_fields(&body, 413);
    // Well within it.
    let under = json!({"external_id": "SM2", "from": CUSTOMER, "to": L1_SMS, "body": "z".repeat(100_000)}).to_string();
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/messages/inbound",
        &service_token(),
        "application/json",
        under,
    )
    .await;
    assert_ne!(r.status().as_u16(), 413);
}

/// A minimal HTTP/1.1 exchange over a std socket that keeps reading the answer while the
/// request body is written from another thread (write errors ignored).
mod early_answer {
    use std::{
        io::{Read, Write},
        net::{Shutdown, TcpStream},
    };

    use serde_json::Value;

    use crate::helpers::PATIENCE;

    /// Status, content type and JSON body of the answer to a JSON POST.
    pub async fn post(port: u16, path: &str, token: &str, body: String) -> (u16, String, Value) {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tokio::task::spawn_blocking(move || exchange(port, head, body.into_bytes()))
            .await
            .expect("exchange thread")
    }

    fn exchange(port: u16, head: String, body: Vec<u8>) -> (u16, String, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.write_all(head.as_bytes()).expect("request head written");
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(&body);
        });
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let answer = loop {
            if let Some(answer) = parse(&buf) {
                break answer;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    break parse(&buf)
                        .unwrap_or_else(|| panic!("a complete answer: {}", String::from_utf8_lossy(&buf)));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let _ = stream.shutdown(Shutdown::Both);
        let _ = sender.join();
        answer
    }

    /// The answer once `buf` holds all of it (Content-Length or chunked).
    fn parse(buf: &[u8]) -> Option<(u16, String, Value)> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let rest = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let mut content_type = String::new();
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            let (k, v) = line.split_once(':')?;
            match k.trim().to_ascii_lowercase().as_str() {
                "content-type" => content_type = v.trim().to_owned(),
                "content-length" => length = v.trim().parse::<usize>().ok(),
                "transfer-encoding" => chunked = v.to_ascii_lowercase().contains("chunked"),
                _ => {}
            }
        }
        let body = if chunked {
            let mut out = Vec::new();
            let mut at = 0;
            loop {
                let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")? + at;
                let size = usize::from_str_radix(String::from_utf8_lossy(&rest[at..line_end]).trim(), 16).ok()?;
                at = line_end + 2;
                if size == 0 {
                    break out;
                }
                if rest.len() < at + size + 2 {
                    return None;
                }
                out.extend_from_slice(&rest[at..at + size]);
                at += size + 2;
            }
        } else {
            let n = length.unwrap_or(0);
            if rest.len() < n {
                return None;
            }
            rest[..n].to_vec()
        };
        let json =
            serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
        Some((status, content_type, json))
    }
}

// ---------------------------------------------------------------------------------------
// 415

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415_problem() {
    let app = spawn_app().await;
    app.seed().await;
    let body = json!({"name": "Ursula"}).to_string();
    problem(
        raw(
            &app,
            Method::PUT,
            "/api/v1/users/u1",
            &service_token(),
            "text/plain",
            body,
        )
        .await,
        415,
    )
    .await;
    let body = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "hi"}).to_string();
    let r = raw(
        &app,
        Method::POST,
        "/api/v1/messages/inbound",
        &service_token(),
        "text/plain",
        body,
    )
    .await;
    problem(r, 415).await;
    let r = raw(
        &app,
        Method::PUT,
        "/api/v1/preferences",
        &service_token(),
        "application/x-www-form-urlencoded",
        "a=b",
    )
    .await;
    problem(r, 415).await;
    assert!(
        mine(&app, &user_token("sam", &["L1"])).await.is_empty(),
        "the refused message was not stored"
    );
}

// ---------------------------------------------------------------------------------------
// 422

#[tokio::test]
async fn a_path_id_with_bad_characters_or_65_characters_is_a_422_problem() {
    let app = spawn_app().await;
    app.seed().await;
    let long = "x".repeat(65);
    for path in [
        "/api/v1/users/bad%20id",
        "/api/v1/users/%C3%BC",
        "/api/v1/users/a%2Fb",
        &format!("/api/v1/users/{long}"),
    ] {
        let r = app.put(path, &service_token(), json!({"name": "U"})).await;
        let body = problem(r, 422).await;
        assert!(
            body["detail"].as_str().unwrap().contains("id"),
            "the detail names the id: {body}"
        );
    }
    let r = app.get("/api/v1/threads/bad%20id", &olga()).await;
    problem(r, 422).await;

    let ok = "y".repeat(64);
    let body = app
        .put_ok(&format!("/api/v1/users/{ok}"), json!({"name": "Sixty Four"}))
        .await;
    assert_eq!(body["id"], ok.as_str());
    let body = app
        .put_ok("/api/v1/users/A-z_0.9:x", json!({"name": "Every class"}))
        .await;
    assert_eq!(body["id"], "A-z_0.9:x");
}

#[tokio::test]
async fn a_body_id_with_bad_characters_or_65_characters_is_a_422_problem_naming_it() {
    let app = spawn_app().await;
    app.seed().await;
    let mut body = folder_body(json!([]));
    body["location_id"] = json!("L 1");
    let (status, resp) = put(&app, "/api/v1/folders/F2", &service_token(), body).await;
    assert_invalid(status, &resp, "location_id");

    let mut body = folder_body(json!([]));
    body["sales_resource_id"] = json!("s".repeat(65));
    let (status, resp) = put(&app, "/api/v1/folders/F2", &service_token(), body).await;
    assert_invalid(status, &resp, "sales_resource_id");

    let mut body = folder_body(json!([]));
    body["service_resource_id"] = json!("a/b");
    let (status, resp) = put(&app, "/api/v1/folders/F2", &service_token(), body).await;
    assert_invalid(status, &resp, "service_resource_id");

    problem(app.get("/api/v1/folders/F2", &olga()).await, 404).await;

    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let (status, resp) = post(
        &app,
        &format!("/api/v1/threads/{t}/assign"),
        &olga(),
        json!({"folder_id": "F 1"}),
    )
    .await;
    assert_invalid(status, &resp, "folder_id");
}

#[tokio::test]
async fn a_bad_phone_number_is_a_422_problem_naming_the_field() {
    let app = spawn_app().await;
    app.seed().await;
    for bad in [
        "555-CALL-NOW",
        "12",
        "+1234567890123456",
        "tel:+15550002222",
        "+1 555 000 2222 ext 5",
    ] {
        let (status, resp) = put(
            &app,
            "/api/v1/locations/L2",
            &service_token(),
            json!({"name": "L2", "sms_numbers": [bad]}),
        )
        .await;
        assert_invalid(status, &resp, "sms_numbers");
        let (status, resp) = put(&app, "/api/v1/folders/F2", &service_token(), folder_body(json!([bad]))).await;
        assert_invalid(status, &resp, "phone_numbers");
        let (status, resp) = app.inbound("SM1", bad, L1_SMS, "hi").await;
        assert_invalid(status, &resp, "from");
    }
}

#[tokio::test]
async fn a_nul_character_in_any_text_is_a_422_problem_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    app.seed().await;
    let olga = olga();
    let (status, resp) = app.inbound("SM1", CUSTOMER, L1_SMS, "a\u{0}b").await;
    assert_invalid(status, &resp, "body");
    let (status, resp) = app.inbound("SM\u{0}2", CUSTOMER, L1_SMS, "hi").await;
    assert_invalid(status, &resp, "external_id");
    assert!(mine(&app, &olga).await.is_empty(), "no thread from a refused message");
    let (status, resp) = put(
        &app,
        "/api/v1/locations/L2",
        &service_token(),
        json!({"name": "L\u{0}2", "sms_numbers": []}),
    )
    .await;
    assert_invalid(status, &resp, "name");
    let (status, resp) = put(
        &app,
        "/api/v1/folders/F2",
        &service_token(),
        json!({"name": "F\u{0}2", "location_id": "L1", "phone_numbers": []}),
    )
    .await;
    assert_invalid(status, &resp, "name");
    problem(app.get("/api/v1/folders/F2", &olga).await, 404).await;
    let (status, resp) = get(&app, "/api/v1/folders?q=a%00b", &olga).await;
    assert_invalid(status, &resp, "q");
    let (status, _) = app.inbound("SM1", CUSTOMER, L1_SMS, "ab").await;
    assert_eq!(status, 201, "the refused message's external id is still free");
}

#[tokio::test]
async fn paging_parameters_out_of_range_are_422_problems_naming_them() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let sam = user_token("sam", &["L1"]);
    let (status, body) = get(&app, "/api/v1/threads?limit=201", &sam).await;
    assert_invalid(status, &body, "limit");
    let (status, body) = get(&app, "/api/v1/threads?before=certainly-not-a-cursor", &sam).await;
    assert_invalid(status, &body, "before");
    let (status, body) = get(&app, &format!("/api/v1/threads/{t}/messages?limit=500"), &sam).await;
    assert_invalid(status, &body, "limit");
    let (status, body) = get(&app, &format!("/api/v1/threads/{t}/messages?before=%%%garbage"), &sam).await;
    assert!(
        status == 422 || status == 400,
        "a garbage cursor is refused: {status} {body}"
    );
    let (status, body) = get(&app, &format!("/api/v1/threads/{t}/messages?limit=200"), &sam).await;
    assert_eq!(status, 200, "200 is the largest limit: {body}");
}

// ---------------------------------------------------------------------------------------
// Nothing partial is stored

#[tokio::test]
async fn a_new_folder_with_one_bad_phone_among_good_ones_is_not_stored() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, resp) = put(
        &app,
        "/api/v1/folders/F2",
        &service_token(),
        folder_body(json!(["+15559990000", "not a phone", "+15558880000"])),
    )
    .await;
    assert_invalid(status, &resp, "phone_numbers");
    problem(app.get("/api/v1/folders/F2", &olga()).await, 404).await;
    let found = get_ok(&app, "/api/v1/folders?phone=15559990000", &olga()).await;
    assert_eq!(found, json!([]));
    let ingested = ingest(&app, "SM1", "+15559990000").await;
    assert_eq!(
        ingested["thread"]["folder_id"],
        json!(null),
        "no half-stored folder claims the number"
    );
}

#[tokio::test]
async fn a_failed_folder_update_leaves_the_folder_as_it_was() {
    let app = spawn_app().await;
    app.seed().await;
    let before = get_ok(&app, "/api/v1/folders/F1", &olga()).await;
    let (status, resp) = put(
        &app,
        "/api/v1/folders/F1",
        &service_token(),
        json!({"name": "Changed", "location_id": "L1", "phone_numbers": ["+15557776666", "bad"],
               "sales_resource_id": "olga", "service_resource_id": null}),
    )
    .await;
    assert_invalid(status, &resp, "phone_numbers");
    assert_eq!(get_ok(&app, "/api/v1/folders/F1", &olga()).await, before);
}

#[tokio::test]
async fn a_location_with_one_bad_number_is_not_stored() {
    let app = spawn_app().await;
    app.seed().await;
    let (status, resp) = put(
        &app,
        "/api/v1/locations/L2",
        &service_token(),
        json!({"name": "L2", "sms_numbers": ["+15550002222", "nope"]}),
    )
    .await;
    assert_invalid(status, &resp, "sms_numbers");
    let (status, resp) = app.inbound("SM1", CUSTOMER, "+15550002222", "hi").await;
    assert_invalid(status, &resp, "to");
}

#[tokio::test]
async fn a_failed_ingestion_creates_no_thread_and_does_not_use_up_its_external_id() {
    let app = spawn_app().await;
    app.seed().await;
    let olga = olga();
    subscribe(&app, &olga, true).await;
    let stranger = "+15559990000";
    let attachments: Vec<_> = (0..21)
        .map(|i| json!({"url": format!("https://media.example/{i}.jpg"), "content_type": "image/jpeg"}))
        .collect();

    let (status, resp) = app
        .inbound_json(
            json!({"external_id": "SM1", "from": stranger, "to": L1_SMS, "body": "x", "attachments": attachments}),
        )
        .await;
    assert_invalid(status, &resp, "attachments");
    let (status, resp) = app.inbound("SM1", stranger, "+15550009999", "x").await;
    assert_invalid(status, &resp, "to");
    assert!(mine(&app, &olga).await.is_empty());
    assert_eq!(unread_of(&app, &olga).await, 0);

    let (status, ok) = app.inbound("SM1", stranger, L1_SMS, "now valid").await;
    assert_eq!(status, 201, "the external id of a refused message is still free: {ok}");
    assert_eq!(ok["thread"]["unread_count"], 1);
    let t = thread_id(&ok);
    assert_eq!(
        all_messages(&app, &format!("/api/v1/threads/{t}/messages"), &olga)
            .await
            .len(),
        1
    );
}

#[tokio::test]
async fn a_refused_preferences_update_changes_nothing() {
    let app = spawn_app().await;
    let (status, resp) = put(
        &app,
        "/api/v1/preferences",
        &service_token(),
        json!({"notify_sales_resource": false, "notify_service_resource": "no"}),
    )
    .await;
    assert!(
        status == 422 || status == 400,
        "an ill-typed preference is refused: {status} {resp}"
    );
    assert_problem_fields(&resp, status);
    let stored = get_ok(&app, "/api/v1/preferences", &service_token()).await;
    assert_eq!(
        stored,
        json!({"notify_sales_resource": true, "notify_service_resource": true})
    );
}

#[tokio::test]
async fn an_expired_service_token_is_refused_on_directory_and_ingestion_routes() {
    let app = spawn_app().await;
    let claims = json!({"sub": "ingest", "tenant": TENANT, "roles": ["service"], "exp": now_secs() - 120});
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    problem(app.put("/api/v1/users/u1", &expired, json!({"name": "U"})).await, 401).await;
    problem(app.post("/api/v1/messages/inbound", &expired, json!({})).await, 401).await;
    problem(app.get("/api/v1/preferences", &expired).await, 401).await;
}

#[tokio::test]
async fn a_user_over_the_rate_limit_gets_a_429_problem_with_retry_after_and_others_do_not() {
    let app = spawn_app_with(|s| {
        s.limits.user_per_second = 1;
        s.limits.user_burst = 2;
    })
    .await;
    app.seed().await;
    let sam = user_token("sam", &["L1"]);
    for _ in 0..2 {
        assert_eq!(app.get("/api/v1/me", &sam).await.status(), 200);
    }
    let limited = app.get("/api/v1/me", &sam).await;
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    problem(limited, 429).await;
    assert_eq!(
        app.get("/api/v1/me", &user_token("sue", &["L1"])).await.status(),
        200,
        "limits are per user"
    );
    for i in 0..5 {
        let (status, _) = app
            .inbound(&format!("SM{i}"), "+15551234567", "+15550001111", "hi")
            .await;
        assert_eq!(status, 201, "service tokens are unlimited by default");
    }
}

#[tokio::test]
async fn a_token_with_both_service_and_user_roles_is_held_to_the_user_rate_limit() {
    let app = spawn_app_with(|s| {
        s.limits.user_per_second = 1;
        s.limits.user_burst = 3;
    })
    .await;
    app.seed().await;
    let both = token("bot", &["service", "user"], &["L1"]);
    for i in 0..3 {
        let (status, body) = get(&app, "/api/v1/threads", &both).await;
        assert_eq!(status, 200, "call {i} is within the burst: {body}");
    }
    let limited = app.get("/api/v1/threads", &both).await;
    assert!(limited.headers().contains_key("retry-after"), "{limited:?}");
    problem(limited, 429).await;
    // A token with the service role alone is counted by the service limiter: unlimited here.
    for i in 0..5 {
        let (status, _) = app.inbound(&format!("SM{i}"), CUSTOMER, L1_SMS, "hi").await;
        assert_eq!(status, 201);
    }
}

#[tokio::test]
async fn a_thread_cursor_given_to_a_message_list_is_a_422_problem_naming_before() {
    let app = spawn_app().await;
    app.seed().await;
    for i in 0..3 {
        app.inbound(&format!("SM{i}"), CUSTOMER, L1_SMS, "hi").await;
        app.inbound(&format!("SN{i}"), &format!("+1555765432{i}"), L1_SMS, "hi")
            .await;
    }
    let olga = user_token("olga", &["L1"]);
    subscribe(&app, &olga, true).await;
    let (_, page) = get(&app, "/api/v1/threads?limit=1", &olga).await;
    let thread_cursor = page["next"].as_str().expect("more threads than the page").to_owned();
    let thread = page["threads"][0]["id"].as_str().unwrap().to_owned();
    let (status, body) = get(
        &app,
        &format!("/api/v1/threads/{thread}/messages?before={}", encode(&thread_cursor)),
        &olga,
    )
    .await;
    assert_invalid(status, &body, "before");
}
