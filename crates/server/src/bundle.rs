//! Writing `searchset` and `history` Bundles.
//!
//! Bundles are written as bytes, splicing each stored resource body in unchanged: a page of a
//! thousand resources costs one buffer, not a thousand parse/serialise round trips.

use fhirside_store::StoredVersion;

use crate::context;

/// Writes one Bundle.
pub(crate) struct BundleWriter {
    buf: Vec<u8>,
    entries: usize,
    /// Where `,"entry":[` starts: FHIR JSON allows no empty arrays, so an empty Bundle drops it.
    entry_start: usize,
}

impl BundleWriter {
    /// Starts a Bundle of `kind` (`searchset`, `history`) with its `self` and optional `next` links.
    pub fn new(kind: &str, self_link: &str, next_link: Option<&str>, total: Option<u64>) -> BundleWriter {
        Self::paged(kind, self_link, None, next_link, total)
    }

    /// Starts a Bundle with `self`, `previous` and `next` links.
    pub fn paged(
        kind: &str,
        self_link: &str,
        previous_link: Option<&str>,
        next_link: Option<&str>,
        total: Option<u64>,
    ) -> BundleWriter {
        let mut buf = Self::head(kind);
        if let Some(total) = total {
            buf.extend_from_slice(format!(",\"total\":{total}").as_bytes());
        }
        buf.extend_from_slice(br#","link":[{"relation":"self","url":"#);
        push_string(&mut buf, self_link);
        buf.push(b'}');
        for (relation, link) in [("previous", previous_link), ("next", next_link)] {
            if let Some(link) = link {
                buf.extend_from_slice(br#",{"relation":""#);
                buf.extend_from_slice(relation.as_bytes());
                buf.extend_from_slice(br#"","url":"#);
                push_string(&mut buf, link);
                buf.push(b'}');
            }
        }
        buf.push(b']');
        Self::with_entries(buf)
    }

    /// Starts a `batch-response` or `transaction-response` Bundle.
    pub fn response(kind: &str) -> BundleWriter {
        Self::with_entries(Self::head(kind))
    }

    fn head(kind: &str) -> Vec<u8> {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(br#"{"resourceType":"Bundle","id":""#);
        buf.extend_from_slice(crate::ids::new_id().as_bytes());
        buf.extend_from_slice(br#"","meta":{"lastUpdated":""#);
        buf.extend_from_slice(fhir::datetime::format_instant(fhir::datetime::now_micros()).as_bytes());
        buf.extend_from_slice(br#""},"type":""#);
        buf.extend_from_slice(kind.as_bytes());
        buf.push(b'"');
        buf
    }

    fn with_entries(mut buf: Vec<u8>) -> BundleWriter {
        let entry_start = buf.len();
        buf.extend_from_slice(br#","entry":["#);
        BundleWriter { buf, entries: 0, entry_start }
    }

    /// A `batch-response`/`transaction-response` entry: the outcome of one request entry.
    pub fn response_entry(
        &mut self,
        status: &str,
        version: Option<&StoredVersion>,
        location: bool,
        resource: bool,
        outcome: Option<&serde_json::Value>,
    ) {
        self.begin_entry();
        self.buf.push(b'{');
        if let Some(v) = version.filter(|v| resource && !v.deleted && !v.body.is_empty()) {
            self.buf.extend_from_slice(br#""fullUrl":"#);
            push_string(&mut self.buf, &full_url(v));
            self.buf.extend_from_slice(br#","resource":"#);
            self.buf.extend_from_slice(&v.body);
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(br#""response":{"status":"#);
        push_string(&mut self.buf, status);
        if let Some(v) = version {
            if location {
                self.buf.extend_from_slice(br#","location":"#);
                push_string(&mut self.buf, &format!("{}/_history/{}", full_url(v), v.version));
            }
            self.buf.extend_from_slice(format!(",\"etag\":\"W/\\\"{}\\\"\",\"lastModified\":\"", v.version).as_bytes());
            self.buf.extend_from_slice(fhir::datetime::format_instant(v.last_updated).as_bytes());
            self.buf.push(b'"');
        }
        if let Some(outcome) = outcome {
            self.buf.extend_from_slice(br#","outcome":"#);
            self.buf.extend_from_slice(&serde_json::to_vec(outcome).unwrap_or_default());
        }
        self.buf.extend_from_slice(b"}}");
    }

    fn begin_entry(&mut self) {
        if self.entries > 0 {
            self.buf.push(b',');
        }
        self.entries += 1;
    }

    /// A `searchset` entry (`search.mode` is `match` or `outcome`... or `include` later).
    pub fn search_entry(&mut self, v: &StoredVersion, mode: &str) {
        self.begin_entry();
        self.buf.extend_from_slice(br#"{"fullUrl":"#);
        push_string(&mut self.buf, &full_url(v));
        self.buf.extend_from_slice(br#","resource":"#);
        self.buf.extend_from_slice(&v.body);
        self.buf.extend_from_slice(br#","search":{"mode":""#);
        self.buf.extend_from_slice(mode.as_bytes());
        self.buf.extend_from_slice(b"\"}}");
    }

    /// A `searchset` entry holding only the top-level elements `keep` accepts (`_elements`,
    /// `_summary`; it is asked without the `_` of a primitive's extension property), marked
    /// `SUBSETTED` as the spec requires.
    pub fn subsetted_entry(&mut self, v: &StoredVersion, mode: &str, keep: &dyn Fn(&str) -> bool) {
        match subsetted_body(&v.body, keep) {
            Some(body) => self.search_entry(&StoredVersion { body, ..v.clone() }, mode),
            None => self.search_entry(v, mode),
        }
    }

    /// An entry carrying an arbitrary resource (an OperationOutcome with `search.mode` `outcome`).
    pub fn outcome_entry(&mut self, resource: &serde_json::Value) {
        self.begin_entry();
        self.buf.extend_from_slice(br#"{"resource":"#);
        self.buf.extend_from_slice(&serde_json::to_vec(resource).unwrap_or_default());
        self.buf.extend_from_slice(br#","search":{"mode":"outcome"}}"#);
    }

    /// A `batch-response` entry whose resource is a searchset Bundle (a GET search entry).
    pub fn search_response_entry(&mut self, status: &str, searchset: &[u8]) {
        self.begin_entry();
        self.buf.extend_from_slice(br#"{"resource":"#);
        self.buf.extend_from_slice(searchset);
        self.buf.extend_from_slice(br#","response":{"status":"#);
        push_string(&mut self.buf, status);
        self.buf.extend_from_slice(b"}}");
    }

    /// A `history` entry: the version (none for a deletion), its request and its response.
    pub fn history_entry(&mut self, v: &StoredVersion) {
        self.begin_entry();
        self.buf.extend_from_slice(br#"{"fullUrl":"#);
        push_string(&mut self.buf, &full_url(v));
        if !v.deleted {
            self.buf.extend_from_slice(br#","resource":"#);
            self.buf.extend_from_slice(&v.body);
        }
        let url = match v.method.as_str() {
            "POST" => v.resource_type.clone(),
            _ => format!("{}/{}", v.resource_type, v.id),
        };
        let status = match (v.method.as_str(), v.version) {
            ("DELETE", _) => "204",
            (_, 1) => "201",
            _ => "200",
        };
        self.buf.extend_from_slice(br#","request":{"method":""#);
        self.buf.extend_from_slice(v.method.as_str().as_bytes());
        self.buf.extend_from_slice(br#"","url":"#);
        push_string(&mut self.buf, &url);
        self.buf.extend_from_slice(br#"},"response":{"status":""#);
        self.buf.extend_from_slice(status.as_bytes());
        self.buf.extend_from_slice(format!("\",\"etag\":\"W/\\\"{}\\\"\",\"lastModified\":\"", v.version).as_bytes());
        self.buf.extend_from_slice(fhir::datetime::format_instant(v.last_updated).as_bytes());
        self.buf.extend_from_slice(b"\"}}");
    }

    pub fn finish(mut self) -> bytes::Bytes {
        if self.entries == 0 {
            self.buf.truncate(self.entry_start);
            self.buf.push(b'}');
        } else {
            self.buf.extend_from_slice(b"]}");
        }
        self.buf.into()
    }
}

fn full_url(v: &StoredVersion) -> String {
    format!("{}/{}/{}", context::base_url(), v.resource_type, v.id)
}

fn push_string(buf: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *buf, s).expect("writing to a Vec cannot fail");
}

/// A resource with only the top-level elements `keep` accepts (by name, without a leading `_`),
/// tagged `SUBSETTED`; `None` when the body is not a JSON object.
pub(crate) fn subsetted_body(body: &[u8], keep: &dyn Fn(&str) -> bool) -> Option<bytes::Bytes> {
    let Ok(serde_json::Value::Object(resource)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return None;
    };
    let mut kept = serde_json::Map::new();
    for (key, value) in resource {
        let base = key.strip_prefix('_').unwrap_or(&key);
        if keep(base) {
            kept.insert(key, value);
        }
    }
    let tag = serde_json::json!({
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
        "code": "SUBSETTED",
        "display": "As requested, resource is not fully detailed."
    });
    if let Some(meta) = kept.get_mut("meta").and_then(serde_json::Value::as_object_mut) {
        match meta.get_mut("tag").and_then(serde_json::Value::as_array_mut) {
            Some(tags) => tags.push(tag),
            None => {
                meta.insert("tag".into(), serde_json::Value::Array(vec![tag]));
            }
        }
    }
    Some(serde_json::to_vec(&serde_json::Value::Object(kept)).unwrap_or_default().into())
}
