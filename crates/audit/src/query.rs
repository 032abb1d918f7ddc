//! [`query`]: reading records back.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use time::OffsetDateTime;

use crate::{files, parse_time, AuditError, AuditRecord, ResultType};

/// Which records [`query`] returns: all the given criteria hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `TimeGenerated` at or after this RFC 3339 date-time (or `YYYY-MM-DD`, midnight UTC).
    pub from: Option<String>,
    /// `TimeGenerated` before this RFC 3339 date-time (or `YYYY-MM-DD`, midnight UTC).
    pub to: Option<String>,
    /// `CallerIdentityObjectId`, or the `appid` or `azp` claim in `CallerIdentity`.
    pub caller: Option<String>,
    /// `FhirResourceType`.
    pub resource_type: Option<String>,
    /// `OperationName`.
    pub operation: Option<String>,
    /// `ResultType`.
    pub result: Option<ResultType>,
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
}

impl Filter {
    /// Checks `from` and `to` (what [`query`] would refuse), naming the bad one: for a 400.
    pub fn validate(&self) -> Result<(), String> {
        self.range().map(|_| ())
    }

    pub(crate) fn range(&self) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), String> {
        let parse = |name: &str, value: &Option<String>| match value {
            None => Ok(None),
            Some(text) => parse_time(text)
                .map(Some)
                .ok_or_else(|| format!("{name} '{text}' is not an RFC 3339 date-time or a YYYY-MM-DD date")),
        };
        Ok((parse("from", &self.from)?, parse("to", &self.to)?))
    }
}

/// The records that match, oldest first (in chain order), at most `limit`.
///
/// It reads only the files whose day can hold records of `[from, to)`: from the day of `from` to the
/// day after that of `to` (a record is in the file of its day or, when it was appended after a
/// record of a later day, in a later file; the day after covers requests that ran across midnight).
/// Lines that are not records (a torn line) are skipped: [`verify`](crate::verify) reports them.
/// A missing directory has no records; a bad `from` or `to` is an error of kind `InvalidInput`
/// ([`Filter::validate`] tells first).
pub fn query(dir: &Path, filter: &Filter, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
    let (from, to) = filter.range().map_err(AuditError::invalid)?;
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let listed = match files::list(dir) {
        Ok(listed) => listed,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let first_day = from.map(|t| t.to_offset(time::UtcOffset::UTC).date());
    let last_day = to.map(|t| t.to_offset(time::UtcOffset::UTC).date().next_day().unwrap_or(time::Date::MAX));
    let needles = Needles::new(filter);
    let mut line = Vec::with_capacity(4096);
    for (day, path) in listed {
        if first_day.is_some_and(|first| day < first) || last_day.is_some_and(|last| day > last) {
            continue;
        }
        let mut reader = BufReader::with_capacity(256 * 1024, File::open(&path)?);
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.pop() != Some(b'\n') || !needles.may_match(&line) {
                continue;
            }
            if from.is_some() || to.is_some() {
                // `TimeGenerated` is the first member: check the range before parsing the whole line.
                let Some(time) = leading_time(&line) else { continue };
                if from.is_some_and(|from| time < from) || to.is_some_and(|to| time >= to) {
                    continue;
                }
            }
            let Ok(record) = serde_json::from_slice::<AuditRecord>(&line) else { continue };
            if matches(filter, &record) {
                out.push(record);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }
    Ok(out)
}

/// The criteria other than time, on a parsed record.
fn matches(filter: &Filter, record: &AuditRecord) -> bool {
    let equal = |wanted: &Option<String>, value: Option<&str>| wanted.as_deref().is_none_or(|w| Some(w) == value);
    equal(&filter.resource_type, record.fhir_resource_type.as_deref())
        && equal(&filter.operation, Some(&record.operation_name))
        && equal(&filter.correlation_id, Some(&record.correlation_id))
        && filter.result.is_none_or(|r| r == record.result_type)
        && filter.caller.as_deref().is_none_or(|caller| {
            record.caller_identity_object_id.as_deref() == Some(caller)
                || ["appid", "azp"]
                    .iter()
                    .any(|claim| record.caller_identity.get(*claim).and_then(|v| v.as_str()) == Some(caller))
        })
}

/// The `TimeGenerated` at the start of a stored line.
fn leading_time(line: &[u8]) -> Option<OffsetDateTime> {
    let rest = line.strip_prefix(br#"{"TimeGenerated":""#)?;
    let end = rest.iter().position(|&b| b == b'"')?;
    parse_time(std::str::from_utf8(&rest[..end]).ok()?)
}

/// Byte strings that a matching line must contain (as `serde_json` writes them): a cheap test
/// before parsing. A line that contains them may still not match (the text may be elsewhere).
struct Needles(Vec<Vec<u8>>);

impl Needles {
    fn new(filter: &Filter) -> Needles {
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut needles = Vec::new();
        let mut member = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                needles.push(format!("\"{name}\":{}", json(value)).into_bytes());
            }
        };
        member("OperationName", &filter.operation);
        member("FhirResourceType", &filter.resource_type);
        member("CorrelationId", &filter.correlation_id);
        if let Some(result) = filter.result {
            needles.push(format!("\"ResultType\":\"{result:?}\"").into_bytes());
        }
        if let Some(caller) = &filter.caller {
            needles.push(json(caller).into_bytes());
        }
        Needles(needles)
    }

    fn may_match(&self, line: &[u8]) -> bool {
        self.0.iter().all(|needle| line.windows(needle.len()).any(|w| w == needle.as_slice()))
    }
}
