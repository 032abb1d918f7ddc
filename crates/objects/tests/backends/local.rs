//! The local backend through the public API, with the scenarios every backend runs.

use fhirside_objects::ObjectStore;

use crate::scenarios;
use crate::servers::{client, temp_dir};

fn store() -> (ObjectStore, std::path::PathBuf) {
    let root = temp_dir("local");
    let store = ObjectStore::from_setting(&format!("file:{}", root.display()), &|_| None, client()).unwrap();
    assert_eq!(store.describe(), format!("local directory {}", root.display()));
    (store, root)
}

#[tokio::test]
async fn basics_pages_and_large_objects() {
    let (store, root) = store();
    let url_base = format!("file://{}", root.display());
    scenarios::basics(&store, "exports", &url_base).await;
    scenarios::pages_and_prefixes(&store, "paged").await;
    scenarios::large_objects(&store, "large").await;
    std::fs::remove_dir_all(root).unwrap();
}
