//! Authentication and authorization: accepted keys and algorithms, required claims,
//! roles, and tenant isolation.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use switchboard::auth::now_secs;

use crate::helpers::http::*;
use crate::helpers::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

/// Claims of a valid `user` token for olga at L1 in the test tenant.
fn claims() -> Value {
    json!({"sub": "olga", "tenant": TENANT, "roles": ["user"], "locations": ["L1"], "exp": now_secs() + 3600})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("token signed")
}

fn hs(alg: Algorithm, secret: &str, claims: &Value) -> String {
    sign(alg, &EncodingKey::from_secret(secret.as_bytes()), claims)
}

fn rs256(private: &str, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        &EncodingKey::from_rsa_pem(&fixture_bytes(private)).expect("an RSA private key"),
        claims,
    )
}

fn es256(claims: &Value) -> String {
    sign(
        Algorithm::ES256,
        &EncodingKey::from_ec_pem(&fixture_bytes("ec_private.pem")).expect("an EC private key"),
        claims,
    )
}

/// base64url without padding, enough to hand-craft an unsigned token.
fn b64(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// `GET /api/v1/me` status with `token`.
async fn me_status(app: &TestApp, token: &str) -> u16 {
    app.get("/api/v1/me", token).await.status().as_u16()
}

async fn refused(app: &TestApp, token: &str) {
    problem(app.get("/api/v1/me", token).await, 401).await;
}

async fn accepted(app: &TestApp, token: &str) {
    let me = get_ok(app, "/api/v1/me", token).await;
    assert_eq!(me["user_id"], "olga");
    assert_eq!(me["tenant"], TENANT);
}

// ---------------------------------------------------------------------------------------
// Keys and algorithms

#[tokio::test]
async fn a_bearer_token_in_the_authorization_header_is_accepted() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(app.url("/api/v1/me"))
        .header("Authorization", format!("Bearer {}", user_token("olga", &["L1"])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["user_id"], "olga");
    assert_eq!(me["locations"], json!(["L1"]));
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_configured_secret_is_accepted() {
    let app = spawn_app().await;
    accepted(&app, &hs(Algorithm::HS256, SECRET, &claims())).await;
    refused(&app, &hs(Algorithm::HS256, "not-the-secret", &claims())).await;
}

#[tokio::test]
async fn an_rs256_token_is_accepted_with_the_configured_public_key() {
    let app = spawn_app_with(|s| s.auth.public_key_pem_file = fixture("rsa_public.pem")).await;
    accepted(&app, &rs256("rsa_private.pem", &claims())).await;
    refused(&app, &rs256("rsa_other_private.pem", &claims())).await;
    refused(&app, &es256(&claims())).await;
}

#[tokio::test]
async fn an_es256_token_is_accepted_with_the_configured_public_key() {
    let app = spawn_app_with(|s| s.auth.public_key_pem_file = fixture("ec_public.pem")).await;
    accepted(&app, &es256(&claims())).await;
    refused(&app, &rs256("rsa_private.pem", &claims())).await;
}

#[tokio::test]
async fn hs256_and_a_public_key_may_be_configured_together() {
    let app = spawn_app_with(|s| s.auth.public_key_pem_file = fixture("rsa_public.pem")).await;
    accepted(&app, &hs(Algorithm::HS256, SECRET, &claims())).await;
    accepted(&app, &rs256("rsa_private.pem", &claims())).await;
}

#[tokio::test]
async fn hs256_is_refused_when_only_a_public_key_is_configured() {
    let app = spawn_app_with(|s| {
        s.auth.hs256_secret = String::new();
        s.auth.public_key_pem_file = fixture("rsa_public.pem");
    })
    .await;
    accepted(&app, &rs256("rsa_private.pem", &claims())).await;
    refused(&app, &hs(Algorithm::HS256, SECRET, &claims())).await;
    // Key confusion: an HMAC keyed with the public key's own PEM text.
    let pem = String::from_utf8(fixture_bytes("rsa_public.pem")).unwrap();
    refused(&app, &hs(Algorithm::HS256, &pem, &claims())).await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = spawn_app().await;
    let body = b64(claims().to_string().as_bytes());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT"}"#,
        r#"{"alg":"none"}"#,
    ] {
        let unsigned = format!("{}.{body}.", b64(header.as_bytes()));
        refused(&app, &unsigned).await;
    }
    // The same claims properly signed are fine, so it is the algorithm that is refused.
    accepted(&app, &hs(Algorithm::HS256, SECRET, &claims())).await;
}

#[tokio::test]
async fn hs384_and_hs512_are_refused_even_with_the_right_secret() {
    let app = spawn_app().await;
    refused(&app, &hs(Algorithm::HS384, SECRET, &claims())).await;
    refused(&app, &hs(Algorithm::HS512, SECRET, &claims())).await;
}

// ---------------------------------------------------------------------------------------
// Claims

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let app = spawn_app().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let app = spawn_app().await;
    let mut c = claims();
    c["exp"] = json!(now_secs() - 3600);
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted_and_beyond_it_refused() {
    let lenient = spawn_app_with(|s| s.auth.leeway_secs = 120).await;
    let strict = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let mut c = claims();
    c["exp"] = json!(now_secs() - 30);
    let token = hs(Algorithm::HS256, SECRET, &c);
    accepted(&lenient, &token).await;
    refused(&strict, &token).await;
}

#[tokio::test]
async fn a_token_not_valid_before_a_future_time_is_refused() {
    let app = spawn_app().await;
    let mut c = claims();
    c["nbf"] = json!(now_secs() + 3600);
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    c["nbf"] = json!(now_secs() - 60);
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = spawn_app_with(|s| {
        s.auth.issuer = "https://id.example".into();
        s.auth.audience = "switchboard".into();
    })
    .await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims();
        if let Some(i) = iss {
            c["iss"] = json!(i);
        }
        if let Some(a) = aud {
            c["aud"] = json!(a);
        }
        hs(Algorithm::HS256, SECRET, &c)
    };
    accepted(&app, &with(Some("https://id.example"), Some("switchboard"))).await;
    refused(&app, &with(Some("https://id.example"), None)).await;
    refused(&app, &with(None, Some("switchboard"))).await;
    refused(&app, &with(Some("https://evil.example"), Some("switchboard"))).await;
    refused(&app, &with(Some("https://id.example"), Some("another-app"))).await;
    refused(&app, &with(None, None)).await;
}

#[tokio::test]
async fn issuer_and_audience_are_not_checked_when_not_configured() {
    let app = spawn_app().await;
    let mut c = claims();
    c["iss"] = json!("https://anyone.example");
    c["aud"] = json!("anything");
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn an_array_aud_is_accepted_when_no_audience_is_configured() {
    let app = spawn_app().await;
    let mut c = claims();
    c["aud"] = json!(["switchboard", "reporting"]);
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    c["aud"] = json!(["reporting"]);
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn an_array_aud_passes_a_configured_audience_when_any_element_matches_it() {
    let app = spawn_app_with(|s| s.auth.audience = "switchboard".into()).await;
    let with_aud = |aud: Value| {
        let mut c = claims();
        c["aud"] = aud;
        hs(Algorithm::HS256, SECRET, &c)
    };
    accepted(&app, &with_aud(json!(["switchboard", "reporting"]))).await;
    accepted(&app, &with_aud(json!(["reporting", "switchboard"]))).await;
    accepted(&app, &with_aud(json!("switchboard"))).await;
    refused(&app, &with_aud(json!(["reporting", "billing"]))).await;
    refused(&app, &with_aud(json!([]))).await;
    refused(&app, &with_aud(json!("reporting"))).await;
}

#[tokio::test]
async fn fractional_exp_iat_and_nbf_are_accepted() {
    let app = spawn_app().await;
    let now = now_secs() as f64;
    let mut c = claims();
    c["exp"] = json!(now + 3600.5);
    c["iat"] = json!(now - 0.25);
    c["nbf"] = json!(now - 60.5);
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    // The brief's example, far in the future.
    c["exp"] = json!(4_102_444_800.5_f64);
    accepted(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn a_fractional_exp_in_the_past_is_refused() {
    let app = spawn_app_with(|s| s.auth.leeway_secs = 0).await;
    let mut c = claims();
    c["exp"] = json!(now_secs() as f64 - 120.5);
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn a_fractional_nbf_in_the_future_is_refused() {
    let app = spawn_app().await;
    let mut c = claims();
    c["nbf"] = json!(now_secs() as f64 + 3600.5);
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
}

#[tokio::test]
async fn a_negative_or_non_numeric_exp_is_refused() {
    let app = spawn_app().await;
    for exp in [json!(-1.5), json!("4102444800"), json!(null)] {
        let mut c = claims();
        c["exp"] = exp;
        refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    }
}

#[tokio::test]
async fn a_member_token_must_list_its_locations() {
    let app = spawn_app().await;
    let mut c = claims();
    c.as_object_mut().unwrap().remove("locations");
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    let mut c = claims();
    c["roles"] = json!(["admin"]);
    c.as_object_mut().unwrap().remove("locations");
    refused(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
    // A service token needs none.
    let svc = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "ingest", "tenant": TENANT, "roles": ["service"], "exp": now_secs() + 60}),
    );
    assert_eq!(app.get("/api/v1/preferences", &svc).await.status(), 200);
}

#[tokio::test]
async fn a_token_needs_a_subject_and_a_tenant() {
    let app = spawn_app().await;
    for key in ["sub", "tenant"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(key);
        let status = me_status(&app, &hs(Algorithm::HS256, SECRET, &c)).await;
        assert_eq!(status, 401, "a token without {key}");
    }
}

// ---------------------------------------------------------------------------------------
// Roles

#[tokio::test]
async fn the_service_role_cannot_use_the_message_center() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let svc = service_token();
    problem(app.get("/api/v1/me", &svc).await, 403).await;
    problem(app.get("/api/v1/threads", &svc).await, 403).await;
    problem(app.get(&format!("/api/v1/threads/{t}"), &svc).await, 403).await;
    problem(
        app.post(&format!("/api/v1/threads/{t}/replies"), &svc, json!({"body": "hi"}))
            .await,
        403,
    )
    .await;
    problem(
        app.put("/api/v1/me/subscriptions", &svc, json!({"subscribe_all": true}))
            .await,
        403,
    )
    .await;
}

#[tokio::test]
async fn users_and_admins_cannot_post_inbound_messages() {
    let app = spawn_app().await;
    app.seed().await;
    let body = json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "hi"});
    for tok in [user_token("sam", &["L1"]), admin_token("ada", &["L1"])] {
        problem(app.post("/api/v1/messages/inbound", &tok, body.clone()).await, 403).await;
    }
    assert!(
        mine(&app, &user_token("sam", &["L1"])).await.is_empty(),
        "nothing was ingested"
    );
}

#[tokio::test]
async fn an_admin_may_use_the_message_center() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let admin = admin_token("ada", &["L1"]);
    assert_eq!(me(&app, &admin).await["user_id"], "ada");
    assert_eq!(thread(&app, &t, &admin).await["id"], t.as_str());
}

// ---------------------------------------------------------------------------------------
// Tenants

#[tokio::test]
async fn a_user_of_another_tenant_never_sees_this_tenants_threads() {
    let app = spawn_app().await;
    app.seed().await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let m = message_id(&ingest(&app, "SM2", CUSTOMER).await);

    // Same user id, same location ids, another company.
    let sam_b = token_in("globex", "sam", &["user"], &["L1"]);
    let me = me(&app, &sam_b).await;
    assert_eq!(me["tenant"], "globex");
    assert_eq!(me["unread_count"], 0);
    subscribe(&app, &sam_b, true).await;
    assert!(mine(&app, &sam_b).await.is_empty());
    assert!(resource_view(&app, "sam", &sam_b).await.is_empty());
    assert_eq!(get_ok(&app, "/api/v1/resources", &sam_b).await, json!([]));
    assert_eq!(get_ok(&app, "/api/v1/folders", &sam_b).await, json!([]));
    problem(app.get(&format!("/api/v1/threads/{t}"), &sam_b).await, 404).await;
    problem(app.get(&format!("/api/v1/threads/{t}/messages"), &sam_b).await, 404).await;
    problem(
        app.post(&format!("/api/v1/threads/{t}/read"), &sam_b, json!({})).await,
        404,
    )
    .await;
    problem(app.get("/api/v1/folders/F1", &sam_b).await, 404).await;
    problem(
        app.post(&format!("/api/v1/messages/{m}/link-images"), &sam_b, json!({}))
            .await,
        404,
    )
    .await;

    // Tenant A is untouched.
    assert_eq!(unread_of(&app, &user_token("sam", &["L1"])).await, 2);
}

#[tokio::test]
async fn a_service_of_another_tenant_cannot_see_or_change_this_tenants_data() {
    let app = spawn_app().await;
    app.seed().await;
    let svc_b = token_in("globex", "ingest", &["service"], &[]);

    // A's SMS number and location are unknown in B.
    let (status, body) = post(
        &app,
        "/api/v1/messages/inbound",
        &svc_b,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "hi"}),
    )
    .await;
    assert_invalid(status, &body, "to");
    let (status, body) = put(
        &app,
        "/api/v1/folders/F1",
        &svc_b,
        json!({"name": "B", "location_id": "L1", "phone_numbers": [], "sales_resource_id": null, "service_resource_id": null}),
    )
    .await;
    assert_invalid(status, &body, "location_id");

    // B's preferences are its own.
    let (status, _) = put(
        &app,
        "/api/v1/preferences",
        &svc_b,
        json!({"notify_sales_resource": false}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        get_ok(&app, "/api/v1/preferences", &service_token()).await,
        json!({"notify_sales_resource": true, "notify_service_resource": true})
    );

    // B may reuse A's ids and even A's SMS number without touching A.
    let (status, body) = put(
        &app,
        "/api/v1/locations/L1",
        &svc_b,
        json!({"name": "B one", "sms_numbers": [L1_SMS]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(
        &app,
        "/api/v1/folders/F1",
        &svc_b,
        json!({"name": "B folder", "location_id": "L1", "phone_numbers": [CUSTOMER], "sales_resource_id": null, "service_resource_id": "bob"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, b_msg) = post(
        &app,
        "/api/v1/messages/inbound",
        &svc_b,
        json!({"external_id": "SM1", "from": CUSTOMER, "to": L1_SMS, "body": "B"}),
    )
    .await;
    assert_eq!(status, 201, "{b_msg}");

    let olga_a = user_token("olga", &["L1"]);
    let f1 = get_ok(&app, "/api/v1/folders/F1", &olga_a).await;
    assert_eq!(f1["name"], "Folder F1");
    assert_eq!(f1["sales_resource_id"], "sam");
    subscribe(&app, &olga_a, true).await;
    assert!(mine(&app, &olga_a).await.is_empty(), "B's message is not A's");
    let (status, a_msg) = app.inbound("SM1", CUSTOMER, L1_SMS, "A").await;
    assert_eq!(status, 201, "external ids are per tenant too: {a_msg}");
    assert_ne!(thread_id(&a_msg), thread_id(&b_msg));
    assert_eq!(a_msg["thread"]["folder_id"], "F1");

    // bob is B's service resource (B turned off only the sales resource).
    let bob = token_in("globex", "bob", &["user"], &["L1"]);
    assert_eq!(mine_ids(&app, &bob).await, vec![thread_id(&b_msg)]);
}
