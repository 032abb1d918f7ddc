//! Grouping measurements into the Observations they belong to (Azure's observation groups).
//!
//! Measurements are first separated by device, type, patient, encounter and correlation id (as Azure
//! groups a batch), then by the template's `periodInterval`:
//!
//! - `Single` (0): one group per measurement instant, the window `[t, t]`;
//! - `Hourly` (60) / `Daily` (1440): UTC windows `[hh:00:00, hh:59:59.9999999]` and
//!   `[00:00:00, 23:59:59.9999999]`, the ends Azure writes into `effectivePeriod`;
//! - `CorrelationId` (-1): one group per correlation id, the window spanning its measurements.
//!
//! Within a group each value name keeps its values sorted by time; of two values at the same instant
//! the first one received stays, as Azure's time-sorted set does.
//!
//! A group's Observation is found again through its identifier, [`MeasurementGroup::observation_identifier`]:
//! `{patient}.{device}.{type}.{start}.{end}` (times as `yyyyMMddHHmmssZ`) or
//! `{patient}.{device}.{type}.{correlation id}`, with the system [`crate::SERVICE_SYSTEM`], exactly as
//! Azure builds it, so a conditional update on `identifier` makes re-processing idempotent.

use crate::error::ObservationError;
use crate::fhir_mapping::{FhirMapping, PeriodInterval};
use crate::measurement::Measurement;
use crate::time::{Timestamp, TICKS_PER_HOUR};
use std::collections::BTreeMap;

/// Measurements that go into one Observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementGroup {
    pub type_name: String,
    pub device_id: String,
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    pub correlation_id: Option<String>,
    pub interval: PeriodInterval,
    /// The window (for correlation groups, the first and last measurement times).
    pub start: Timestamp,
    pub end: Timestamp,
    measurements: usize,
    values: BTreeMap<String, Vec<(Timestamp, String)>>,
}

/// An Observation identifier (`system|value`), the key to find a group's Observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationIdentifier {
    pub system: String,
    pub value: String,
}

/// The outcome of grouping a batch: the groups in a deterministic order (by [`MeasurementGroup::key`]),
/// and the measurements that could not be grouped.
#[derive(Debug, Clone, Default)]
pub struct Grouping {
    pub groups: Vec<MeasurementGroup>,
    pub errors: Vec<ObservationError>,
}

impl MeasurementGroup {
    /// The window part of the identifier: `yyyyMMddHHmmssZ.yyyyMMddHHmmssZ`, or the correlation id.
    pub fn id_segment(&self) -> String {
        match (&self.interval, &self.correlation_id) {
            (PeriodInterval::CorrelationId, Some(id)) => id.clone(),
            _ => format!("{}.{}", self.start.to_identifier_token(), self.end.to_identifier_token()),
        }
    }

    /// A key unique to the group within what the device mapping found: the message-level identifiers
    /// (device, patient, encounter, correlation id), the type and the window, `|`-separated. Use
    /// [`MeasurementGroup::observation_identifier`] to find the Observation in the FHIR store.
    pub fn key(&self) -> String {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{}|{}",
            self.type_name,
            self.device_id,
            opt(&self.patient_id),
            opt(&self.encounter_id),
            opt(&self.correlation_id),
            self.id_segment()
        )
    }

    /// The identifier Azure gives the group's Observation, from the logical ids of the Patient and
    /// Device resources the caller resolved.
    pub fn observation_identifier(&self, patient_resource_id: &str, device_resource_id: &str) -> ObservationIdentifier {
        ObservationIdentifier {
            system: crate::SERVICE_SYSTEM.to_owned(),
            value: format!("{patient_resource_id}.{device_resource_id}.{}.{}", self.type_name, self.id_segment()),
        }
    }

    /// The values named `name`, sorted by time.
    pub fn values(&self, name: &str) -> &[(Timestamp, String)] {
        self.values.get(name).map_or(&[], Vec::as_slice)
    }

    /// The value names present.
    pub fn value_names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// How many measurements went into the group.
    pub fn measurement_count(&self) -> usize {
        self.measurements
    }

    fn add(&mut self, m: &Measurement) {
        self.measurements += 1;
        if self.interval == PeriodInterval::CorrelationId {
            self.start = self.start.min(m.occurrence_time);
            self.end = self.end.max(m.occurrence_time);
        }
        for v in &m.values {
            let series = self.values.entry(v.name.clone()).or_default();
            let at = series.partition_point(|(t, _)| *t < m.occurrence_time);
            if series.get(at).is_some_and(|(t, _)| *t == m.occurrence_time) {
                continue; // first value at an instant wins
            }
            series.insert(at, (m.occurrence_time, v.value.clone()));
        }
    }
}

/// The `[start, end]` window holding `t` for a time-based interval.
pub(crate) fn window(interval: PeriodInterval, t: Timestamp) -> (Timestamp, Timestamp) {
    match interval {
        PeriodInterval::Hourly => {
            let start = t.floor_hour();
            (start, start.add_ticks(TICKS_PER_HOUR - 1))
        }
        PeriodInterval::Daily => {
            let start = t.floor_day();
            (start, start.add_ticks(24 * TICKS_PER_HOUR - 1))
        }
        PeriodInterval::Single | PeriodInterval::CorrelationId => (t, t),
    }
}

/// Groups `measurements` by the period interval of their type's template in `mapping`.
pub fn group_measurements(mapping: &FhirMapping, measurements: &[Measurement]) -> Grouping {
    let mut groups: BTreeMap<String, MeasurementGroup> = BTreeMap::new();
    let mut errors = Vec::new();
    for m in measurements {
        let Some(template) = mapping.template(&m.type_name) else {
            let error = ObservationError::NoTemplate { type_name: m.type_name.clone() };
            if !errors.contains(&error) {
                errors.push(error);
            }
            continue;
        };
        let interval = template.period_interval;
        if interval == PeriodInterval::CorrelationId && m.correlation_id.is_none() {
            errors.push(ObservationError::MissingCorrelationId {
                type_name: m.type_name.clone(),
                device_id: m.device_id.clone(),
            });
            continue;
        }
        let (start, end) = window(interval, m.occurrence_time);
        let fresh = MeasurementGroup {
            type_name: template.type_name.clone(),
            device_id: m.device_id.clone(),
            patient_id: m.patient_id.clone(),
            encounter_id: m.encounter_id.clone(),
            correlation_id: m.correlation_id.clone(),
            interval,
            start,
            end,
            measurements: 0,
            values: BTreeMap::new(),
        };
        // Single groups are keyed by the exact instant, not the second the identifier shows: two
        // measurements in one second are two groups (and then one Observation, merged), as in Azure.
        let key = match interval {
            PeriodInterval::Single => format!("{}|{}", fresh.key(), start.ticks()),
            _ => fresh.key(),
        };
        groups.entry(key).or_insert(fresh).add(m);
    }
    Grouping { groups: groups.into_values().collect(), errors }
}
