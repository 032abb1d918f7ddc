//! An encrypted embedded store behind [`ProtectedStore`]: searches find what they should through
//! blinded index rows, before and after a data-key rotation, refuse what blinded rows cannot
//! answer, and the database file holds neither the name nor the identifier.

use std::sync::Arc;

use fhirside_keys::{Keyring, KeyringCell, LocalKek};
use fhirside_store::{ResourceStore, Seal, SqliteConfig, SqliteStore, StoreError, Unstamped, WriteOp};
use serde_json::json;

use super::ProtectedStore;
use crate::interaction::search::parse;
use crate::negotiate::Handling;
use crate::params::Params;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

struct Fixture {
    dir: std::path::PathBuf,
    kek: LocalKek,
    keys: KeyringCell,
    inner: Arc<SqliteStore>,
    store: ProtectedStore,
}

fn fixture(rt: &tokio::runtime::Runtime, name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("fhirside-protect-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kek = LocalKek::from_bytes("test", &[9u8; 32]).unwrap();
    let keys = KeyringCell::new();
    keys.replace(rt.block_on(Keyring::create(&kek)).unwrap());
    let config = SqliteConfig { seal: Seal::new(keys.clone()), ..SqliteConfig::in_dir(&dir) };
    let inner = Arc::new(SqliteStore::open(&config).unwrap());
    let store = ProtectedStore::new(inner.clone(), keys.clone());
    Fixture { dir, kek, keys, inner, store }
}

fn create(rt: &tokio::runtime::Runtime, store: &ProtectedStore, id: &str, family: &str, mrn: &str) {
    let resource = json!({
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Ann"]}],
        "identifier": [{"system": "http://hospital.example/mrn", "value": mrn}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "nl"}], "text": "Dutch"}}],
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{family}</div>")}
    });
    let mut map = resource.as_object().unwrap().clone();
    let index = crate::indexing::extract("Patient", &mut map);
    let op = WriteOp::Create {
        resource_type: "Patient".into(),
        id: id.into(),
        resource: Unstamped::new(map),
        index,
        if_none_exist: None,
    };
    rt.block_on(store.write(op)).unwrap();
}

/// The ids a search finds, sorted; or the store's refusal.
fn search(rt: &tokio::runtime::Runtime, store: &ProtectedStore, query: &[(&str, &str)]) -> Result<Vec<String>, String> {
    let params = Params(query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect());
    let (mut query, _) = parse("Patient", &params, Handling::Strict).map_err(|e| format!("{e:?}"))?;
    query.count = 100;
    match rt.block_on(store.search(&query)) {
        Ok(outcome) => {
            let mut ids: Vec<String> = outcome.value.versions.into_iter().map(|v| v.id).collect();
            ids.sort();
            Ok(ids)
        }
        Err(StoreError::Invalid(message)) => Err(message),
        Err(other) => panic!("unexpected store error: {other}"),
    }
}

#[test]
fn searches_match_through_blinded_rows_and_the_file_holds_no_plaintext() {
    let rt = runtime();
    let f = fixture(&rt, "search");
    create(&rt, &f.store, "a", "Donaldson", "MRN-4711");
    create(&rt, &f.store, "b", "Donovan", "MRN-4712");
    create(&rt, &f.store, "c", "Li", "MRN-4713");

    let found = |q: &[(&str, &str)]| search(&rt, &f.store, q).unwrap();
    assert_eq!(found(&[("family", "don")]), ["a", "b"]);
    assert_eq!(found(&[("family", "DONALD")]), ["a"]);
    assert_eq!(found(&[("name", "donaldson")]), ["a"]);
    assert_eq!(found(&[("family", "dox")]), Vec::<String>::new());
    assert_eq!(found(&[("family:exact", "Donaldson")]), ["a"]);
    assert_eq!(found(&[("family:exact", "donaldson")]), Vec::<String>::new());
    assert_eq!(found(&[("family:exact", "Li")]), ["c"]);
    assert_eq!(found(&[("identifier", "MRN-4711")]), ["a"]);
    assert_eq!(found(&[("identifier", "http://hospital.example/mrn|MRN-4712")]), ["b"]);
    assert_eq!(found(&[("identifier", "http://elsewhere.example|MRN-4712")]), Vec::<String>::new());
    assert_eq!(found(&[("identifier", "MRN-4711,MRN-4713")]), ["a", "c"]);
    assert_eq!(found(&[("identifier:not", "MRN-4711")]), ["b", "c"]);
    assert_eq!(found(&[("given", "ann")]).len(), 3);
    // The text of codes is as readable as the codes, and searched as usual.
    assert_eq!(found(&[("language", "nl")]).len(), 3);
    assert_eq!(found(&[("language:text", "du")]).len(), 3);

    for refused in [[("family", "do")], [("family:contains", "nal")], [("_content", "donaldson")]] {
        let message = search(&rt, &f.store, &refused).unwrap_err();
        assert!(message.contains("encrypt") || message.contains("characters"), "{message}");
    }
    let sorted = fhirside_store::SearchQuery {
        types: vec!["Patient".into()],
        sort: vec![fhirside_store::SortKey {
            by: fhirside_store::SortBy::Param { param: "family".into(), kind: fhirside_store::ValueKind::String },
            descending: false,
        }],
        count: 10,
        ..Default::default()
    };
    match rt.block_on(f.store.search(&sorted)) {
        Err(StoreError::Invalid(message)) => assert!(message.contains("keeps no order"), "{message}"),
        other => panic!("a sort by an encrypted string was not refused: {:?}", other.map(|o| o.value.versions.len())),
    }

    // Reads open the sealed bodies.
    let read = rt.block_on(f.store.read("Patient", "a")).unwrap().value.unwrap();
    assert!(std::str::from_utf8(&read.body).unwrap().contains("Donaldson"));

    f.inner.close();
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&f.dir).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    for secret in ["Donaldson", "donaldson", "Donovan", "MRN-4711", "MRN-4712"] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} is in the database files");
    }
    let _ = std::fs::remove_dir_all(&f.dir);
}

#[test]
fn rows_written_before_a_data_key_rotation_are_still_found() {
    let rt = runtime();
    let f = fixture(&rt, "rotation");
    create(&rt, &f.store, "old", "Abernathy", "MRN-1");
    let rotated = rt.block_on(f.keys.get().unwrap().rotate_dek(&f.kek)).unwrap();
    f.keys.replace(rotated);
    create(&rt, &f.store, "new", "Abernethy", "MRN-2");

    let found = |q: &[(&str, &str)]| search(&rt, &f.store, q).unwrap();
    assert_eq!(found(&[("family", "aber")]), ["new", "old"]);
    assert_eq!(found(&[("identifier", "MRN-1")]), ["old"]);
    assert_eq!(found(&[("identifier", "MRN-2")]), ["new"]);
    let old = rt.block_on(f.store.read("Patient", "old")).unwrap().value.unwrap();
    assert!(std::str::from_utf8(&old.body).unwrap().contains("Abernathy"));
    f.inner.close();
    let _ = std::fs::remove_dir_all(&f.dir);
}
