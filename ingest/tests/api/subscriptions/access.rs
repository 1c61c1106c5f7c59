use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{create, id_of, item_path, minimal_body, COLLECTION};
use crate::helpers::{assert_error, spawn_app};

/// Every subscription route this module owns, with a body it would accept.
fn routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    let item = item_path(id);
    vec![
        (Method::POST, COLLECTION.to_owned(), Some(minimal_body())),
        (Method::GET, COLLECTION.to_owned(), None),
        (Method::GET, item.clone(), None),
        (Method::PATCH, item.clone(), Some(json!({"max_retries": 1}))),
        (Method::DELETE, item.clone(), None),
        (Method::POST, format!("{item}/rotate-secret"), None),
    ]
}

/// The routes that take an id.
fn id_routes(id: &str) -> Vec<(Method, String, Option<Value>)> {
    routes(id).into_iter().filter(|(_, path, _)| path != COLLECTION).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_a_valid_token() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    for (method, path, body) in routes(&id) {
        for bad_token in [None, Some("whk_not-a-real-key"), Some("")] {
            let (status, response) = app.request(method.clone(), &path, bad_token, body.as_ref()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} token={bad_token:?}");
            assert_error(&response, "unauthorized");
        }
    }
    let (status, _) = app.get(&item_path(&id), &token).await;
    assert_eq!(status, StatusCode::OK, "nothing was deleted or changed without a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_keys_cannot_manage_subscriptions() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let publisher = app.publisher_key().await;
    let id = id_of(&create(&app, &token, &minimal_body()).await);
    for (method, path, body) in routes(&id) {
        let (status, response) = app.request(method.clone(), &path, Some(&publisher), body.as_ref()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_error(&response, "forbidden");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_subscription_is_not_found_and_untouched() {
    let app = spawn_app().await;
    let owner = app.tenant_key("t1").await;
    let stranger = app.tenant_key("t2").await;
    let created = create(&app, &owner, &minimal_body()).await;
    let id = id_of(&created);
    let theirs = create(&app, &stranger, &minimal_body()).await;

    for (method, path, body) in id_routes(&id) {
        let (status, response) = app.request(method.clone(), &path, Some(&stranger), body.as_ref()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_error(&response, "not_found");
    }
    let (_, list) = app.get(COLLECTION, &stranger).await;
    assert_eq!(
        list["items"].as_array().map(|items| items.iter().map(|s| &s["id"]).collect::<Vec<_>>()),
        Some(vec![&theirs["id"]])
    );

    let (status, read) = app.get(&item_path(&id), &owner).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["max_retries"], 3, "the stranger's PATCH changed nothing");
    assert_eq!(read["updated_at"], created["updated_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_unknown_id_is_not_found() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    for id in ["not-a-uuid", "12345", "sub_abc123", &uuid::Uuid::now_v7().to_string()] {
        for (method, path, body) in id_routes(id) {
            let (status, response) = app.request(method.clone(), &path, Some(&token), body.as_ref()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
            assert_error(&response, "not_found");
        }
    }
}
