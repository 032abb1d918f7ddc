//! The relay's store against both backends: each test runs on a SQLite file of its own and on a
//! PostgreSQL schema of its own (`FHIRSIDE_TEST_POSTGRES`, default
//! `postgres://root@127.0.0.1:5432/test`, as the identity store's tests). The PostgreSQL variants
//! fail, never skip, when the server is missing.

use serde_json::json;

use fhirside_sql::testing::{TestDir, TestSchema};

use super::queue::{Attempt, Next};
use super::*;

/// A store's place, removed when dropped.
#[allow(dead_code)] // held for its drop
enum Place {
    Dir(TestDir),
    Schema(TestSchema),
}

impl Place {
    fn sqlite() -> (Place, RelayStore) {
        let dir = TestDir::create(&format!("fhirside-relay-test-{}", crate::new_id()));
        let store = RelayStore::open(dir.path()).unwrap();
        (Place::Dir(dir), store)
    }

    fn postgres() -> (Place, RelayStore) {
        let schema = TestSchema::create(&format!("fhirside_relay_test_{}", crate::new_id().replace('-', "_")));
        let store = RelayStore::open_postgres(&schema.url).unwrap();
        (Place::Schema(schema), store)
    }
}

/// Each named test, once per backend: `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                let (_place, store) = super::Place::sqlite();
                super::$name(&store);
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let (_place, store) = super::Place::postgres();
                super::$name(&store);
            })*
        }
    };
}

on_both_backends!(
    an_organization_has_three_environments,
    credentials_in_use_and_production_destinations_stay,
    a_patients_messages_are_due_one_after_another,
    a_message_needs_a_verified_destination,
    leases_of_a_killed_process_are_freed_at_start,
);

/// An environment of `flag` with a verified FHIR destination; returns (environment, destination).
fn with_destination(store: &RelayStore, flag: &str) -> (Environment, Destination) {
    let environment = store.environments(118).unwrap().into_iter().find(|e| e.flag == flag).unwrap();
    let credential = store
        .create_credential(
            &json!({"organization": 118, "name": "c", "environmentId": environment.id,
                    "authStrategy": "OAuth_2.0_2-legged", "grantType": "client_credentials",
                    "url": "https://login.example/token", "clientId": "a", "clientSecret": "s"}),
            1,
        )
        .unwrap();
    let (destination, _) = store
        .create_destination(
            &environment.id,
            &json!({"name": "fhir", "authCredential": credential.id, "cloudProviderSettings":
                {"typeId": "azure", "productId": "health-data-services", "settings": {"fhirBaseUrl": "https://f.example"}}}),
            2,
        )
        .unwrap();
    let (destination, _) = store.record_verification(&destination, Ok(()), 3).unwrap();
    (environment, destination)
}

fn an_organization_has_three_environments(store: &RelayStore) {
    let first = store.environments(7).unwrap();
    let flags: Vec<&str> = first.iter().map(|e| e.flag.as_str()).collect();
    assert_eq!(flags, ["Development", "Staging", "Production"]);
    assert_eq!(store.environments(7).unwrap(), first, "created once");
}

fn credentials_in_use_and_production_destinations_stay(store: &RelayStore) {
    let (_, destination) = with_destination(store, "Production");
    let credential = destination.auth_credential.clone().unwrap();
    assert!(matches!(store.delete_credential(&credential), Err(RelayError::Conflict(m)) if m.contains("'fhir'")));
    assert!(
        matches!(store.delete_destination(&destination.id), Err(RelayError::Conflict(m)) if m.contains("production"))
    );
    let (_, staging) = with_destination(store, "Staging");
    store.delete_destination(&staging.id).unwrap();
    store.delete_credential(staging.auth_credential.as_deref().unwrap()).unwrap();
}

fn a_patients_messages_are_due_one_after_another(store: &RelayStore) {
    let (environment, _) = with_destination(store, "Staging");
    let (source, key) = store.create_source(&environment.id, &json!({"name": "ehr"}), 4).unwrap();
    assert_eq!(store.source_by_key(&environment.id, &key).unwrap(), source);
    assert!(matches!(store.source_by_key(&environment.id, "rsk_nope"), Err(RelayError::Unauthenticated(_))));
    assert_eq!(store.update_source(&source.id, &json!({"name": "EHR 2"})).unwrap().name, "EHR 2");
    assert_eq!(store.source(&source.id).unwrap().name, "EHR 2");
    assert!(matches!(store.update_source(&source.id, &json!({"serviceRegion": "x"})), Err(RelayError::Invalid(_))));
    let body = json!({"resourceType": "Patient"});
    let first = store.accept_message(&environment.id, &source.id, &body, Some("p1"), 10).unwrap();
    let _second = store.accept_message(&environment.id, &source.id, &body, Some("p1"), 11).unwrap();
    let other = store.accept_message(&environment.id, &source.id, &body, Some("p2"), 12).unwrap();
    let due = store.due(100, 10).unwrap();
    assert_eq!(due.len(), 2, "p1's second message waits for its first");
    let work = store.lease(&due[0].delivery_id, "w", 100, 200).unwrap().unwrap();
    assert_eq!(work.message_id, first);
    assert!(store.lease(&due[0].delivery_id, "other", 150, 300).unwrap().is_none(), "leased");
    assert_eq!(store.due(150, 10).unwrap().len(), 1, "only p2's message while p1's first is out");
    let failed = Attempt { succeeded: false, http_status: Some(503), error: Some("HTTP 503".into()), outcome: None };
    store.finish(&work.delivery_id, "w", &failed, Next::Retry { at: 500 }, 160).unwrap();
    assert_eq!(store.due(200, 10).unwrap().len(), 1, "still first in line while it backs off");
    let ok = Attempt { succeeded: true, http_status: Some(200), error: None, outcome: None };
    let work = store.lease(&due[0].delivery_id, "w", 500, 600).unwrap().unwrap();
    store.finish(&work.delivery_id, "w", &ok, Next::Succeeded, 510).unwrap();
    let view = store.message(&first).unwrap();
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["logs"][0]["attempts"]["total"], 2);
    assert_eq!(view["logs"][0]["history"][0]["httpStatus"], 503);
    assert_eq!(store.due(520, 10).unwrap().len(), 2, "p1's second message is now due");
    let other_delivery = store.due(520, 10).unwrap().into_iter().find(|d| d.delivery_id != due[0].delivery_id).unwrap();
    let _ = other;
    let work = store.lease(&other_delivery.delivery_id, "w", 520, 600).unwrap().unwrap();
    store.finish(&work.delivery_id, "w", &failed, Next::Dead, 530).unwrap();
    let view = store.message(&work.message_id).unwrap();
    assert_eq!(view["status"], "failed");
    assert_eq!(view["logs"][0]["deadLetter"], true);
    let dead = store.messages(&environment.id, &["dead"], 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["id"], work.message_id.as_str());
    assert_eq!(store.messages(&environment.id, &["failed", "dead"], 10).unwrap().len(), 1);
    assert_eq!(store.messages(&environment.id, &["succeeded"], 10).unwrap()[0]["id"], first.as_str());
    assert_eq!(store.messages(&environment.id, &[], 10).unwrap().len(), 3);
    assert_eq!(store.messages(&environment.id, &[], 2).unwrap().len(), 2);
    assert_eq!(store.replay(&work.message_id, 540).unwrap(), 1);
    assert_eq!(store.message(&work.message_id).unwrap()["status"], "pending");
}

fn a_message_needs_a_verified_destination(store: &RelayStore) {
    let environment = store.environments(1).unwrap().remove(0);
    let e = store.accept_message(&environment.id, "s", &json!({}), None, 1).unwrap_err();
    assert!(matches!(e, RelayError::Conflict(m) if m.contains("no verified destination")));
}

fn leases_of_a_killed_process_are_freed_at_start(store: &RelayStore) {
    let (environment, _) = with_destination(store, "Development");
    store.accept_message(&environment.id, "s", &json!({}), None, 1).unwrap();
    let due = store.due(10, 10).unwrap();
    store.lease(&due[0].delivery_id, "dead process", 10, 1_000_000).unwrap().unwrap();
    assert!(store.due(20, 10).unwrap().is_empty());
    assert_eq!(store.release_leases("another process").unwrap(), 0);
    assert_eq!(store.release_leases("dead process").unwrap(), 1);
    assert_eq!(store.due(20, 10).unwrap(), due);
}

#[test]
fn postgres_takes_an_embedded_installations_queue() {
    let (_dir, embedded) = Place::sqlite();
    let (environment, _) = with_destination(&embedded, "Production");
    let (source, key) = embedded.create_source(&environment.id, &json!({"name": "ehr"}), 4).unwrap();
    let first = embedded
        .accept_message(&environment.id, &source.id, &json!({"resourceType": "Patient"}), Some("p"), 5)
        .unwrap();
    let second = embedded
        .accept_message(&environment.id, &source.id, &json!({"resourceType": "Patient"}), Some("p"), 6)
        .unwrap();
    let due = embedded.due(10, 10).unwrap();
    let work = embedded.lease(&due[0].delivery_id, "w", 10, 1000).unwrap().unwrap();
    let ok = Attempt { succeeded: true, http_status: Some(200), error: None, outcome: None };
    embedded.finish(&work.delivery_id, "w", &ok, Next::Succeeded, 11).unwrap();

    let (_schema, target) = Place::postgres();
    let moved = embedded.move_to(&target).unwrap();
    assert_eq!(moved, MoveCounts { destinations: 1, messages: 2, pending: 1 });
    assert_eq!(target.message(&first).unwrap(), embedded.message(&first).unwrap());
    assert_eq!(target.source_by_key(&environment.id, &key).unwrap(), source);
    let queued = target.due(20, 10).unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(target.lease(&queued[0].delivery_id, "new", 20, 100).unwrap().unwrap().message_id, second);
    assert!(matches!(embedded.move_to(&target), Err(RelayError::Conflict(_))), "only into an empty store");
}
