//! `destinations deliveries`: recent delivery records.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use destination_core::EventId;
use destinations::deliveries::{DeliveryRecord, read_records};

use super::{Failure, load_for_reading};

pub(crate) fn show(
    path: &Path,
    destination: Option<&str>,
    event: Option<&str>,
    limit: usize,
    json: bool,
) -> Result<ExitCode, Failure> {
    let config = load_for_reading(path)?;
    let event: Option<EventId> = event
        .map(|e| e.parse().map_err(|_| format!("{e:?} is not an event id")))
        .transpose()?;
    let records = read_records(&config.queue.path)
        .map_err(|e| format!("cannot read delivery records: {e}"))?;
    // A destination removed from the config may still have records worth seeing.
    if let Some(name) = destination
        && !config.destinations.contains_key(name)
        && !records.iter().any(|r| r.destination == name)
    {
        return Err(format!("unknown destination `{name}`"));
    }
    let wanted: Vec<&DeliveryRecord> = records
        .iter()
        .filter(|r| destination.is_none_or(|d| r.destination == d))
        .filter(|r| event.as_ref().is_none_or(|id| r.concerns(id)))
        .collect();
    let shown = &wanted[wanted.len().saturating_sub(limit)..];

    let mut out = std::io::stdout().lock();
    for record in shown {
        let _ = if json {
            writeln!(out, "{}", serde_json::to_string(record).unwrap_or_default())
        } else {
            writeln!(out, "{}", describe(record))
        };
    }
    if !json {
        let _ = writeln!(out, "{} of {} record(s) shown", shown.len(), wanted.len());
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(r: &DeliveryRecord) -> String {
    let mut text = format!(
        "{} {} {} batch {} ({} event(s), {} attempt(s))",
        r.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        r.destination,
        r.outcome,
        r.batch,
        r.events,
        r.attempts
    );
    if let Some(event) = &r.event {
        text.push_str(&format!("\n    event {event}"));
    }
    if let Some(response) = &r.response {
        let status = response["status"]
            .as_u64()
            .map_or("none".into(), |s| s.to_string());
        let latency = response["latency_ms"].as_f64().unwrap_or(0.0);
        text.push_str(&format!("\n    response {status} in {latency:.1} ms"));
        if let Some(body) = response["body"].as_str().filter(|b| !b.is_empty()) {
            let body: String = body.chars().take(200).collect();
            text.push_str(&format!(": {body:?}"));
        }
    }
    if let Some(error) = &r.error {
        text.push_str(&format!("\n    error: {error}"));
    }
    text
}
