//! `destinations dlq list|replay`.

use std::path::Path;
use std::process::ExitCode;

use destinations::queue::{DeadLetterStore, FileDeadLetters};

use super::send::wait;
use super::{Failure, chain, load, load_for_reading, start};

pub(crate) async fn list(path: &Path, destination: Option<&str>) -> Result<ExitCode, Failure> {
    let config = load_for_reading(path)?;
    if let Some(name) = destination
        && !config.destinations.contains_key(name)
    {
        return Err(format!("unknown destination `{name}`"));
    }
    if !config.queue.path.exists() {
        println!(
            "0 dead letter(s): no queue at {} yet",
            config.queue.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = FileDeadLetters::open(&config.queue.path).map_err(|e| chain(&e))?;
    let letters = store.list(destination).await.map_err(|e| chain(&e))?;
    let mut events = 0;
    for letter in &letters {
        events += letter.events.len();
        println!(
            "#{} {} {} event(s), {} attempt(s), failed {}: {}",
            letter.id,
            letter.destination,
            letter.events.len(),
            letter.attempts,
            letter.failed_at.to_rfc3339(),
            letter.error
        );
        for event in letter.events.iter().take(3) {
            println!("    {}", event.id);
        }
        if letter.events.len() > 3 {
            println!("    ... and {} more", letter.events.len() - 3);
        }
    }
    println!("{} dead letter(s), {events} event(s)", letters.len());
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn replay(path: &Path, destination: Option<&str>) -> Result<ExitCode, Failure> {
    let config = load(path)?;
    if let Some(name) = destination
        && !config.destinations.contains_key(name)
    {
        return Err(format!("unknown destination `{name}`"));
    }
    let runtime = start(&config).await?;
    let sender = runtime.sender();
    let store = runtime.dead_letters();
    let letters = store.list(destination).await.map_err(|e| chain(&e))?;

    let mut by_destination: Vec<(String, Vec<destinations::Receipt>)> = Vec::new();
    for letter in letters {
        if !config.destinations.contains_key(&letter.destination) {
            eprintln!(
                "#{}: destination `{}` is no longer configured; kept",
                letter.id, letter.destination
            );
            continue;
        }
        let entries = letter
            .events
            .into_iter()
            .map(|e| (letter.destination.clone(), e))
            .collect();
        let receipts = sender
            .send_all_with_receipts(entries)
            .await
            .map_err(|e| chain(&e))?;
        store.remove(&[letter.id]).await.map_err(|e| chain(&e))?;
        match by_destination
            .iter_mut()
            .find(|(d, _)| *d == letter.destination)
        {
            Some((_, list)) => list.extend(receipts.into_iter().map(|(_, r)| r)),
            None => by_destination.push((
                letter.destination,
                receipts.into_iter().map(|(_, r)| r).collect(),
            )),
        }
    }
    runtime.drain();
    if by_destination.is_empty() {
        println!("no dead letters to replay");
    }

    let mut failed = 0;
    for (name, receipts) in by_destination {
        let count = receipts.len();
        let tally = wait(&runtime, &name, receipts, 0).await;
        println!(
            "{name}: replayed {count}, delivered {}, dead-lettered again {}",
            tally.delivered, tally.dead_lettered
        );
        failed += tally.dead_lettered + tally.pending;
    }
    runtime.shutdown().await.map_err(|e| chain(&e))?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
