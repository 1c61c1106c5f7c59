use std::collections::HashSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::{create, id_of, item_path, COLLECTION};
use crate::helpers::{spawn_app, TestApp};

/// Creates `n` subscriptions; returns their ids in creation order.
async fn create_many(app: &TestApp, token: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = json!({"url": format!("https://example.com/hook/{i}"), "events": ["invoice.created"]});
        ids.push(id_of(&create(app, token, &body).await));
    }
    ids
}

/// One page: its ids and its `next_cursor`.
async fn page(app: &TestApp, token: &str, limit: usize, cursor: Option<&str>) -> (Vec<String>, Option<String>) {
    let path = match cursor {
        Some(cursor) => format!("{COLLECTION}?limit={limit}&cursor={cursor}"),
        None => format!("{COLLECTION}?limit={limit}"),
    };
    let (status, body) = app.get(&path, token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids = body["items"].as_array().expect("items").iter().map(id_of).collect();
    let next = match &body["next_cursor"] {
        Value::Null => None,
        Value::String(cursor) => Some(cursor.clone()),
        other => panic!("next_cursor is {other}"),
    };
    (ids, next)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_and_twenty_subscriptions_come_in_three_pages_of_at_most_fifty() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let other = app.tenant_key("t2").await;
    let mut created = create_many(&app, &token, 60).await;
    create_many(&app, &other, 5).await;
    created.extend(create_many(&app, &token, 60).await);

    let (first, cursor) = page(&app, &token, 50, None).await;
    let (second, cursor2) = page(&app, &token, 50, Some(cursor.as_deref().expect("more after page 1"))).await;
    let (third, end) = page(&app, &token, 50, Some(cursor2.as_deref().expect("more after page 2"))).await;
    assert_eq!((first.len(), second.len(), third.len()), (50, 50, 20));
    assert_eq!(end, None, "the last page has no next_cursor");
    let listed: Vec<String> = [first, second, third].concat();
    assert_eq!(listed, created, "every subscription once, in creation order, none of the other tenant's");

    // Without ?limit= a page holds 50.
    let (status, body) = app.get(COLLECTION, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"].as_array().expect("items").len(), 50);
    assert!(body["next_cursor"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_created_while_paging_do_not_shift_the_pages() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let existing = create_many(&app, &token, 30).await;

    let mut seen = Vec::new();
    let mut added = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (ids, next) = page(&app, &token, 10, cursor.as_deref()).await;
        seen.extend(ids);
        // New subscriptions (and a deletion of one already listed) between page fetches.
        added.extend(create_many(&app, &token, 3).await);
        if seen.len() == 10 {
            let (status, _) = app.request(Method::DELETE, &item_path(&seen[0]), Some(&token), None).await;
            assert_eq!(status, StatusCode::NO_CONTENT);
        }
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(seen.len() < 500, "pagination does not end");
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "nothing listed twice");
    assert_eq!(&seen[..30], &existing[..], "every existing subscription once, in order");
    // New ones sort after the cursor, so every one created before the last page was fetched shows up.
    assert!(seen[30..].iter().all(|id| added.contains(id)));
    assert_eq!(seen.len(), 30 + added.len() - 3, "all but the batch created after the last page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_has_no_next_cursor() {
    let app = spawn_app().await;
    let token = app.tenant_key("t1").await;
    let (status, body) = app.get(COLLECTION, &token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"items": [], "next_cursor": null}));
}
