//! Directory: locations, users, folders and tenant preferences (role `service`, preferences
//! also `admin`). Upserts are idempotent and store phone numbers in E.164.

use serde_json::json;

use crate::helpers::http::*;
use crate::helpers::*;

// ---------------------------------------------------------------------------------------
// Locations

#[tokio::test]
async fn putting_a_location_returns_it_with_its_sms_numbers_in_e164() {
    let app = spawn_app().await;
    let (status, body) = put(
        &app,
        "/api/v1/locations/L1",
        &service_token(),
        json!({"name": "Downtown", "sms_numbers": ["(555) 000-1111", "+1 555.000.2222"]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"id": "L1", "name": "Downtown", "sms_numbers": ["+15550001111", "+15550002222"]})
    );
}

#[tokio::test]
async fn a_national_number_gets_the_configured_default_country_code() {
    let app = spawn_app_with(|s| s.phone.default_country = "GB".into()).await;
    let body = app
        .put_ok(
            "/api/v1/locations/L1",
            json!({"name": "London", "sms_numbers": ["020 7946 0018"]}),
        )
        .await;
    assert_eq!(body["sms_numbers"], json!(["+442079460018"]));
}

#[tokio::test]
async fn putting_the_same_location_twice_gives_the_same_location() {
    let app = spawn_app().await;
    let req = json!({"name": "Downtown", "sms_numbers": ["555-000-1111"]});
    let first = app.put_ok("/api/v1/locations/L1", req.clone()).await;
    let second = app.put_ok("/api/v1/locations/L1", req).await;
    assert_eq!(first, second);
    // The number still routes to exactly one location.
    let (status, body) = app.inbound("SM1", CUSTOMER, "+15550001111", "hi").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["thread"]["location_id"], "L1");
}

#[tokio::test]
async fn a_location_may_have_no_sms_numbers() {
    let app = spawn_app().await;
    let body = app
        .put_ok(
            "/api/v1/locations/L9",
            json!({"name": "Back office", "sms_numbers": []}),
        )
        .await;
    assert_eq!(body, json!({"id": "L9", "name": "Back office", "sms_numbers": []}));
}

#[tokio::test]
async fn updating_a_location_replaces_its_name_and_numbers() {
    let app = spawn_app().await;
    app.location("L1", &["+15550001111"]).await;
    let body = app
        .put_ok(
            "/api/v1/locations/L1",
            json!({"name": "Uptown", "sms_numbers": ["+15550003333"]}),
        )
        .await;
    assert_eq!(
        body,
        json!({"id": "L1", "name": "Uptown", "sms_numbers": ["+15550003333"]})
    );
    let (status, old) = app.inbound("SM1", CUSTOMER, "+15550001111", "hi").await;
    assert_invalid(status, &old, "to");
    let (status, new) = app.inbound("SM2", CUSTOMER, "+15550003333", "hi").await;
    assert_eq!(status, 201, "{new}");
    assert_eq!(new["thread"]["location_id"], "L1");
}

// ---------------------------------------------------------------------------------------
// Users

#[tokio::test]
async fn putting_a_user_returns_the_user() {
    let app = spawn_app().await;
    let (status, body) = put(
        &app,
        "/api/v1/users/sam",
        &service_token(),
        json!({"name": "Sam Sales"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"id": "sam", "name": "Sam Sales"}));
}

#[tokio::test]
async fn putting_the_same_user_twice_lists_them_once_among_resources() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let first = app.user("sam", "Sam Sales").await;
    let second = app.user("sam", "Sam Sales").await;
    assert_eq!(first, second);
    app.folder("F1", "L1", &[CUSTOMER], Some("sam"), None).await;
    let resources = get_ok(&app, "/api/v1/resources", &user_token("olga", &["L1"])).await;
    assert_eq!(resources, json!([{"user_id": "sam", "name": "Sam Sales"}]));
}

#[tokio::test]
async fn renaming_a_user_shows_the_new_name_among_resources() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("sam", "Samuel Sales").await;
    let resources = get_ok(&app, "/api/v1/resources", &user_token("olga", &["L1"])).await;
    let sam = resources
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["user_id"] == "sam")
        .cloned();
    assert_eq!(
        sam,
        Some(json!({"user_id": "sam", "name": "Samuel Sales"})),
        "{resources}"
    );
}

// ---------------------------------------------------------------------------------------
// Folders

#[tokio::test]
async fn putting_a_folder_returns_it_with_its_phone_numbers_in_e164() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let (status, body) = put(
        &app,
        "/api/v1/folders/F1",
        &service_token(),
        json!({"name": "Smith kitchen", "location_id": "L1", "phone_numbers": ["(555) 123-4567", "555.765.4321"],
               "sales_resource_id": "sam", "service_resource_id": "sue"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_folder_shape(&body);
    assert_eq!(
        body,
        json!({"id": "F1", "name": "Smith kitchen", "location_id": "L1", "phone_numbers": ["+15551234567", "+15557654321"],
               "sales_resource_id": "sam", "service_resource_id": "sue"})
    );
}

#[tokio::test]
async fn a_folder_without_resources_stores_nulls() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let body = app.folder("F1", "L1", &[CUSTOMER], None, None).await;
    assert_eq!(body["sales_resource_id"], json!(null));
    assert_eq!(body["service_resource_id"], json!(null));
    let stored = get_ok(&app, "/api/v1/folders/F1", &user_token("olga", &["L1"])).await;
    assert_eq!(stored, body);
}

#[tokio::test]
async fn putting_the_same_folder_twice_stores_one_folder() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let first = app.folder("F1", "L1", &[CUSTOMER], Some("sam"), Some("sue")).await;
    let second = app.folder("F1", "L1", &[CUSTOMER], Some("sam"), Some("sue")).await;
    assert_eq!(first, second);
    let olga = user_token("olga", &["L1"]);
    let all = get_ok(&app, "/api/v1/folders", &olga).await;
    assert_eq!(all, json!([first.clone()]));
    assert_eq!(get_ok(&app, "/api/v1/folders/F1", &olga).await, first);
}

#[tokio::test]
async fn updating_a_folder_replaces_its_fields() {
    let app = spawn_app().await;
    app.seed().await;
    let updated = app
        .put_ok(
            "/api/v1/folders/F1",
            json!({"name": "Renamed", "location_id": "L1", "phone_numbers": ["+15559990000"],
                   "sales_resource_id": null, "service_resource_id": "sue"}),
        )
        .await;
    let stored = get_ok(&app, "/api/v1/folders/F1", &user_token("olga", &["L1"])).await;
    assert_eq!(stored, updated);
    assert_eq!(
        stored,
        json!({"id": "F1", "name": "Renamed", "location_id": "L1", "phone_numbers": ["+15559990000"],
               "sales_resource_id": null, "service_resource_id": "sue"})
    );
}

#[tokio::test]
async fn a_folder_must_be_at_a_known_location() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    let (status, body) = put(
        &app,
        "/api/v1/folders/F1",
        &service_token(),
        json!({"name": "F", "location_id": "L404", "phone_numbers": [CUSTOMER], "sales_resource_id": null, "service_resource_id": null}),
    )
    .await;
    assert_invalid(status, &body, "location_id");
}

#[tokio::test]
async fn a_folder_change_moves_its_threads_between_resources_live() {
    let app = spawn_app().await;
    app.seed().await;
    app.user("sid", "Sid Sales").await;
    let t = thread_id(&ingest(&app, "SM1", CUSTOMER).await);
    let (sam, sid) = (user_token("sam", &["L1"]), user_token("sid", &["L1"]));
    assert_eq!(mine_ids(&app, &sam).await, vec![t.clone()]);
    assert_eq!(unread_of(&app, &sam).await, 1);
    assert_eq!(unread_of(&app, &sid).await, 0);

    app.folder("F1", "L1", &[CUSTOMER], Some("sid"), Some("sue")).await;

    assert!(
        mine_ids(&app, &sam).await.is_empty(),
        "sam is no longer the sales resource"
    );
    assert_eq!(unread_of(&app, &sam).await, 0);
    assert_eq!(mine_ids(&app, &sid).await, vec![t]);
    assert_eq!(unread_of(&app, &sid).await, 1);
}

// ---------------------------------------------------------------------------------------
// Roles

#[tokio::test]
async fn user_and_admin_tokens_cannot_write_the_directory() {
    let app = spawn_app().await;
    app.location("L1", &[L1_SMS]).await;
    for tok in [user_token("olga", &["L1"]), admin_token("ada", &["L1"])] {
        let r = app
            .put("/api/v1/locations/L2", &tok, json!({"name": "L2", "sms_numbers": []}))
            .await;
        problem(r, 403).await;
        let r = app.put("/api/v1/users/u1", &tok, json!({"name": "U"})).await;
        problem(r, 403).await;
        let r = app
            .put(
                "/api/v1/folders/F9",
                &tok,
                json!({"name": "F", "location_id": "L1", "phone_numbers": [], "sales_resource_id": null, "service_resource_id": null}),
            )
            .await;
        problem(r, 403).await;
    }
    let (status, _) = get(&app, "/api/v1/folders/F9", &user_token("olga", &["L1"])).await;
    assert_eq!(status, 404, "the refused folder was not stored");
}

// ---------------------------------------------------------------------------------------
// Preferences

#[tokio::test]
async fn preferences_default_to_notifying_both_resources_for_every_role() {
    let app = spawn_app().await;
    for tok in [
        service_token(),
        user_token("olga", &["L1"]),
        admin_token("ada", &["L1"]),
    ] {
        let body = get_ok(&app, "/api/v1/preferences", &tok).await;
        assert_eq!(
            body,
            json!({"notify_sales_resource": true, "notify_service_resource": true})
        );
    }
}

#[tokio::test]
async fn the_service_and_an_admin_may_set_preferences_but_a_user_may_not() {
    let app = spawn_app().await;
    let user = user_token("olga", &["L1"]);
    let r = app
        .put(
            "/api/v1/preferences",
            &user,
            json!({"notify_sales_resource": false, "notify_service_resource": false}),
        )
        .await;
    problem(r, 403).await;
    assert_eq!(
        get_ok(&app, "/api/v1/preferences", &user).await,
        json!({"notify_sales_resource": true, "notify_service_resource": true}),
        "a refused PUT changes nothing"
    );

    let (status, body) = put(
        &app,
        "/api/v1/preferences",
        &admin_token("ada", &["L1"]),
        json!({"notify_sales_resource": false, "notify_service_resource": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"notify_sales_resource": false, "notify_service_resource": true})
    );

    let body = set_preferences(
        &app,
        json!({"notify_sales_resource": true, "notify_service_resource": false}),
    )
    .await;
    assert_eq!(
        body,
        json!({"notify_sales_resource": true, "notify_service_resource": false})
    );
    assert_eq!(get_ok(&app, "/api/v1/preferences", &user).await, body);
}

#[tokio::test]
async fn a_partial_preferences_update_keeps_the_other_value() {
    let app = spawn_app().await;
    let body = set_preferences(&app, json!({"notify_sales_resource": false})).await;
    assert_eq!(
        body,
        json!({"notify_sales_resource": false, "notify_service_resource": true})
    );
    let body = set_preferences(&app, json!({"notify_service_resource": false})).await;
    assert_eq!(
        body,
        json!({"notify_sales_resource": false, "notify_service_resource": false})
    );
    let stored = get_ok(&app, "/api/v1/preferences", &service_token()).await;
    assert_eq!(
        stored,
        json!({"notify_sales_resource": false, "notify_service_resource": false})
    );
}
