//! Lists the Parquet objects under a folder with their row counts, and counts distinct event
//! ids: a quick look at what `destinations send` wrote to a `file://` S3 destination.
//!
//! ```text
//! cargo run -p destinations --example lake_stats -- out/lake
//! ```

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "out/lake".into());
    let mut files = Vec::new();
    parquet_files(Path::new(&dir), &mut files).map_err(|e| format!("cannot read {dir}: {e}"))?;
    files.sort();

    let mut rows = 0;
    let mut ids = HashSet::new();
    for path in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)?.build()?;
        let mut file_rows = 0;
        for batch in reader {
            let batch = batch?;
            file_rows += batch.num_rows();
            if let Some(column) = batch.column_by_name("_event_id")
                && let Some(strings) = column.as_any().downcast_ref::<StringArray>()
            {
                ids.extend(strings.iter().flatten().map(str::to_owned));
            }
        }
        rows += file_rows;
        println!("{file_rows:>8}  {}", path.display());
    }
    println!(
        "{} file(s), {rows} row(s), {} distinct event id(s)",
        files.len(),
        ids.len()
    );
    Ok(())
}
