//! What every backend must do, run against each: the same calls, the same answers.

use std::time::Instant;

use bytes::Bytes;
use fhirside_objects::{ObjectError, ObjectReader, ObjectStore, Tuning};

const NDJSON: &str = "application/fhir+ndjson";
const MIB: usize = 1 << 20;

/// Bytes that differ from offset to offset, so that a misplaced part shows.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    let mut state = 0x9e37_79b9_u32 ^ u32::from(seed);
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    Bytes::from(data)
}

/// Reads a whole object, counting the parts it came in.
pub async fn read_all(mut reader: ObjectReader) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = reader.chunk().await.unwrap() {
        assert!(!chunk.is_empty());
        data.extend_from_slice(&chunk);
        chunks += 1;
    }
    (data, chunks)
}

pub async fn get(store: &ObjectStore, container: &str, key: &str) -> Vec<u8> {
    read_all(store.get(container, key).await.unwrap()).await.0
}

/// Containers, small objects, listing, reading, deleting, URLs.
pub async fn basics(store: &ObjectStore, container: &str, url_base: &str) {
    let missing = store.get("missing-container", "k").await.unwrap_err();
    assert!(matches!(missing, ObjectError::NotFound(_)), "{missing}");
    let error = store.put("missing-container", "k", Bytes::from_static(b"x"), NDJSON).await.unwrap_err();
    assert!(matches!(error, ObjectError::NotFound(_)), "{error}");
    store.ensure_container(container).await.unwrap();
    store.ensure_container(container).await.unwrap();

    let keys = ["job-1/Patient 1.ndjson", "job-1/Observation-ü.ndjson", "job-10/x.ndjson", "other.ndjson"];
    for (i, key) in keys.iter().enumerate() {
        store.put(container, key, Bytes::from(format!("{{\"n\":{i}}}\n")), NDJSON).await.unwrap();
    }
    // A put replaces.
    store.put(container, keys[3], Bytes::from_static(b"{\"n\":\"new\"}\n"), NDJSON).await.unwrap();
    // An empty object is an object.
    store.put(container, "empty", Bytes::new(), NDJSON).await.unwrap();

    assert_eq!(get(store, container, keys[0]).await, b"{\"n\":0}\n");
    assert_eq!(get(store, container, keys[1]).await, b"{\"n\":1}\n");
    assert_eq!(get(store, container, keys[3]).await, b"{\"n\":\"new\"}\n");
    let reader = store.get(container, "empty").await.unwrap();
    assert_eq!(reader.size(), Some(0));
    assert_eq!(read_all(reader).await, (Vec::new(), 0));
    let reader = store.get(container, keys[0]).await.unwrap();
    assert_eq!(reader.size(), Some(8));

    assert_eq!(
        store.list(container, "").await.unwrap(),
        ["empty", "job-1/Observation-ü.ndjson", "job-1/Patient 1.ndjson", "job-10/x.ndjson", "other.ndjson"]
    );
    assert_eq!(
        store.list(container, "job-1/").await.unwrap(),
        ["job-1/Observation-ü.ndjson", "job-1/Patient 1.ndjson"]
    );
    assert_eq!(store.list(container, "job-1").await.unwrap().len(), 3);
    assert!(store.list(container, "nothing/").await.unwrap().is_empty());

    let error = store.get(container, "job-1/absent.ndjson").await.unwrap_err();
    assert!(matches!(error, ObjectError::NotFound(_)), "{error}");
    store.delete(container, keys[0]).await.unwrap();
    store.delete(container, keys[0]).await.unwrap();
    assert!(matches!(store.get(container, keys[0]).await, Err(ObjectError::NotFound(_))));
    assert_eq!(store.list(container, "job-1/").await.unwrap(), ["job-1/Observation-ü.ndjson"]);

    assert_eq!(store.url(container, keys[0]), format!("{url_base}/{container}/job-1/Patient%201.ndjson"));

    for key in ["../escape", "/absolute", "a//b", "nul\0", ""] {
        let error = store.put(container, key, Bytes::new(), NDJSON).await.unwrap_err();
        assert!(matches!(error, ObjectError::Invalid(_)), "{key:?}: {error}");
        assert!(matches!(store.get(container, key).await, Err(ObjectError::Invalid(_))), "{key:?}");
    }
    for bad_container in ["has space", "../up", "", "a/b"] {
        let error = store.ensure_container(bad_container).await.unwrap_err();
        assert!(matches!(error, ObjectError::Invalid(_)), "{bad_container}: {error}");
    }
}

/// An object of more than 8 MiB in one request, and one over the (lowered) multipart threshold
/// in parts, both read back part by part.
pub async fn large_objects(store: &ObjectStore, container: &str) {
    store.ensure_container(container).await.unwrap();
    let started = Instant::now();
    let single = pattern(9 * MIB + 123, 1);
    store.put(container, "large/single.ndjson", single.clone(), NDJSON).await.unwrap();
    let (data, chunks) = read_all(store.get(container, "large/single.ndjson").await.unwrap()).await;
    assert!(data == single, "the object read back differs from the one put");
    assert!(chunks > 1, "a 9 MiB object came in {chunks} part(s): not streamed");

    let parted =
        store.clone().with_tuning(Tuning { multipart_threshold: 6 * MIB, part_size: 5 * MIB, ..*store.tuning() });
    let multi = pattern(13 * MIB + 7, 2);
    parted.put(container, "large/multi.ndjson", multi.clone(), NDJSON).await.unwrap();
    let reader = parted.get(container, "large/multi.ndjson").await.unwrap();
    assert_eq!(reader.size(), Some(multi.len() as u64));
    let (data, _) = read_all(reader).await;
    assert!(data == multi, "the object uploaded in parts differs from the one put");
    // Exactly at the threshold: one request.
    let at = pattern(6 * MIB, 3);
    parted.put(container, "large/at-threshold", at.clone(), NDJSON).await.unwrap();
    assert!(get(store, container, "large/at-threshold").await == at);
    eprintln!("large objects: {:?}", started.elapsed());
}

/// Listings across several pages, and deleting by prefix.
pub async fn pages_and_prefixes(store: &ObjectStore, container: &str) {
    let store = store.clone().with_tuning(Tuning { list_page_size: 3, ..*store.tuning() });
    store.ensure_container(container).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..11 {
        let key = format!("export/job-7/Patient-{i:02}.ndjson");
        store.put(container, &key, Bytes::from(format!("{i}\n")), NDJSON).await.unwrap();
        expected.push(key);
    }
    store.put(container, "export/job-8/Patient.ndjson", Bytes::from_static(b"8\n"), NDJSON).await.unwrap();
    store.put(container, "keep.ndjson", Bytes::from_static(b"k\n"), NDJSON).await.unwrap();
    assert_eq!(store.list(container, "export/job-7/").await.unwrap(), expected);
    assert_eq!(store.list(container, "").await.unwrap().len(), 13);

    assert_eq!(store.delete_prefix(container, "export/job-7/").await.unwrap(), 11);
    assert!(store.list(container, "export/job-7/").await.unwrap().is_empty());
    assert_eq!(store.list(container, "").await.unwrap(), ["export/job-8/Patient.ndjson", "keep.ndjson"]);
    assert_eq!(store.delete_prefix(container, "export/").await.unwrap(), 1);
    assert_eq!(store.delete_prefix(container, "export/").await.unwrap(), 0);
    assert_eq!(store.list(container, "").await.unwrap(), ["keep.ndjson"]);
    assert_eq!(store.delete_prefix("never-created", "").await.unwrap(), 0);
}
