//! AMQP publishing that survives redeliveries and poison: `message_id` is the
//! event id of a body without one, and a message the database keeps refusing
//! ends in `{p}.events.rejected` with code `storage_failed`.

use std::time::Duration;

use lapin::{
    options::ConfirmSelectOptions,
    types::{AMQPValue, ShortString},
};
use serde_json::json;
use shared::{
    amqp::{persistent_json, publish_confirmed},
    testing::{amqp_url, eventually},
};

use crate::helpers::{spawn_app_with, TestApp};

async fn confirm_channel() -> (lapin::Connection, lapin::Channel) {
    let connection = shared::amqp::connect(&amqp_url()).await.expect("broker");
    let channel = connection.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    (connection, channel)
}

async fn metrics(app: &TestApp) -> String {
    app.client.get(format!("{}/metrics", app.base)).send().await.expect("metrics").text().await.expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_without_event_id_delivered_twice_with_one_message_id_is_stored_once() {
    let app = spawn_app_with(&[("INGEST_PREFETCH", "1")]).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/b", &["*"], true).await;
    let (connection, channel) = confirm_channel().await;
    let exchange = app.ingest.state.topology.events_exchange();
    let body = serde_json::to_vec(&json!({"event_data": {"invoice_id": "inv_1"}, "tenant_id": "t1"})).expect("json");
    // The same message twice, as a broker redelivers it after a lost ack.
    for _ in 0..2 {
        let properties = persistent_json().with_message_id(ShortString::from("msg-0001"));
        publish_confirmed(&channel, &exchange, "invoice.created", &body, properties).await.expect("published");
    }
    // And one with no id at all: accepted with a fresh id, and counted.
    publish_confirmed(&channel, &exchange, "invoice.created", &body, persistent_json()).await.expect("published");

    let stored =
        eventually(Duration::from_secs(20), || async { (app.event_count("t1").await == 2).then_some(()) }).await;
    assert!(stored.is_some(), "expected 2 events, found {}", app.event_count("t1").await);
    // Both repeats are consumed: the queue is empty and nothing was rejected.
    let drained = eventually(Duration::from_secs(10), || async {
        let depth = app.queue_depth(&app.ingest.state.topology.ingest_queue()).await;
        (depth == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "messages left on the ingest queue");
    assert!(app.drain_queue(&app.ingest.state.topology.rejected_queue()).await.is_empty());
    let deliveries = app.deliveries_of("t1", "msg-0001").await;
    assert_eq!(deliveries.len(), 2, "one delivery per subscription, once");
    assert_eq!(app.deliveries_of_tenant("t1").await.len(), 4);
    let text = metrics(&app).await;
    let counted = text
        .lines()
        .find_map(|line| line.strip_prefix("webhooks_ingest_events_without_id_total "))
        .and_then(|value| value.trim().parse::<f64>().ok());
    assert!(counted.is_some_and(|n| n >= 1.0), "the id-less event was not counted: {counted:?}");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_database_keeps_refusing_lands_in_rejected_after_its_limit() {
    let app = spawn_app_with(&[]).await;
    app.insert_subscription("poison", "http://127.0.0.1:9/a", &["*"], true).await;
    app.insert_subscription("t1", "http://127.0.0.1:9/a", &["*"], true).await;
    // This database refuses every event of tenant `poison` (not an outage: a refusal).
    app.sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.tenant_id = 'poison' THEN RAISE EXCEPTION 'refused by test trigger'; END IF; RETURN NEW; END $$",
    )
    .await;
    app.sql("CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison()").await;
    let (connection, channel) = confirm_channel().await;
    let exchange = app.ingest.state.topology.events_exchange();
    let poison =
        serde_json::to_vec(&json!({"event_data": {}, "tenant_id": "poison", "event_id": "evt_poison"})).expect("json");
    publish_confirmed(&channel, &exchange, "invoice.created", &poison, persistent_json()).await.expect("published");
    // Good events published meanwhile are stored, even if they share a batch with it.
    for n in 0..5 {
        let good =
            serde_json::to_vec(&json!({"event_data": {}, "tenant_id": "t1", "event_id": format!("evt_good_{n}")}))
                .expect("json");
        publish_confirmed(&channel, &exchange, "invoice.created", &good, persistent_json()).await.expect("published");
    }

    let rejected_queue = app.ingest.state.topology.rejected_queue();
    let rejected = eventually(Duration::from_secs(40), || async {
        let messages = app.drain_queue(&rejected_queue).await;
        (!messages.is_empty()).then_some(messages)
    })
    .await
    .expect("the poison message never reached the rejected queue");
    assert_eq!(rejected.len(), 1);
    let headers = rejected[0].properties.headers().as_ref().expect("headers").inner();
    assert_eq!(headers.get("x-rejection-code"), Some(&shared::amqp::long_string("storage_failed")));
    match headers.get("x-rejection-reason") {
        Some(AMQPValue::LongString(reason)) => {
            assert!(reason.to_string().starts_with("storage_failed: "), "{reason}")
        }
        other => panic!("no reason: {other:?}"),
    }
    assert_eq!(
        headers.get("x-ingest-tries"),
        Some(&AMQPValue::LongLongInt(ingest::publishing::storage_tries::MAX_STORAGE_TRIES - 1)),
        "rejected on its last try"
    );
    assert_eq!(headers.get("x-original-routing-key"), Some(&shared::amqp::long_string("invoice.created")));
    assert_eq!(rejected[0].data, poison, "the body is kept as published");
    assert_eq!(app.event_count("t1").await, 5, "a good event was lost beside the poison one");
    assert_eq!(app.event_count("poison").await, 0);
    assert_eq!(app.queue_depth(&app.ingest.state.topology.ingest_queue()).await, 0, "the poison message still cycles");
    let _ = connection.close(200, "done".into()).await;
}
