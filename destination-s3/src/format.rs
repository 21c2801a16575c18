//! Writing a batch's events into an [`ObjectSink`] as Parquet or NDJSON, chunk by chunk.

use std::borrow::Borrow;
use std::io::Write;

use bytes::Bytes;
use destination_core::Event;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as ParquetCodec;
use parquet::file::properties::WriterProperties;

use crate::client::ObjectSink;
use crate::config::Compression;
use crate::encode::ndjson_line;
use crate::error::S3Error;
use crate::schema::Plan;
use crate::tape::Tape;

/// Events encoded per record batch (and per compressed NDJSON chunk).
const ROWS_PER_CHUNK: usize = 1024;

/// Why writing an object failed: the encoder, or the store.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// Encoding failed; nothing about the store is known.
    Encode(S3Error),
    /// The store refused a request.
    Store(object_store::Error),
}

fn parquet_error(e: impl std::error::Error + Send + Sync + 'static) -> WriteError {
    WriteError::Encode(S3Error::Encode {
        format: "parquet",
        source: Box::new(e),
    })
}

fn ndjson_error(e: std::io::Error) -> WriteError {
    WriteError::Encode(S3Error::Encode {
        format: "ndjson",
        source: Box::new(e),
    })
}

/// Runs a CPU-bound step (encoding, compressing a chunk) so that it does not stall the
/// other tasks of a multi-threaded runtime; on a current-thread runtime it simply runs.
pub(crate) fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Writes `events` as one Parquet file.
///
/// Record batches of [`ROWS_PER_CHUNK`] events are encoded one at a time and their bytes
/// handed to the sink as soon as the writer releases them; a row group is closed whenever
/// its buffered size reaches `part_size`, which bounds the writer's memory.
pub(crate) async fn write_parquet<E: Borrow<Event> + Sync>(
    events: &[E],
    plan: &Plan,
    compression: Compression,
    part_size: usize,
    sink: &mut ObjectSink,
) -> Result<(), WriteError> {
    let codec = match compression {
        Compression::Zstd => ParquetCodec::ZSTD(Default::default()),
        Compression::None => ParquetCodec::UNCOMPRESSED,
        Compression::Snappy | Compression::Gzip => ParquetCodec::SNAPPY,
    };
    let props = WriterProperties::builder()
        .set_compression(codec)
        .set_max_row_group_bytes(Some(part_size.max(1)))
        .set_created_by(concat!("destination-s3 ", env!("CARGO_PKG_VERSION")).into())
        .build();
    // The whole object has one schema, inferred from all its events before the first is
    // encoded; each chunk's tape is dropped once the chunk is encoded.
    let (tapes, encoder) = cpu_bound(|| {
        let tapes: Vec<Tape<'_>> = events.chunks(ROWS_PER_CHUNK).map(Tape::of_events).collect();
        let encoder = plan.encoder(&tapes);
        (tapes, encoder)
    });
    let mut writer =
        ArrowWriter::try_new(Vec::new(), encoder.schema(), Some(props)).map_err(parquet_error)?;
    for (chunk, tape) in events.chunks(ROWS_PER_CHUNK).zip(tapes) {
        let ready = cpu_bound(|| {
            let batch = encoder.encode(chunk, &tape)?;
            drop(tape);
            writer.write(&batch)?;
            if writer.in_progress_size() >= part_size {
                writer.flush()?;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(std::mem::take(writer.inner_mut()))
        })
        .map_err(|source| {
            WriteError::Encode(S3Error::Encode {
                format: "parquet",
                source,
            })
        })?;
        sink.write(Bytes::from(ready))
            .await
            .map_err(WriteError::Store)?;
    }
    // Closing the file encodes and compresses the last row group: CPU work like the rest.
    let tail = cpu_bound(|| writer.into_inner()).map_err(parquet_error)?;
    sink.write(Bytes::from(tail))
        .await
        .map_err(WriteError::Store)
}

/// Writes `events` as NDJSON, compressed as asked.
pub(crate) async fn write_ndjson<E: Borrow<Event> + Sync>(
    events: &[E],
    compression: Compression,
    sink: &mut ObjectSink,
) -> Result<(), WriteError> {
    let mut out = Compressor::new(compression).map_err(ndjson_error)?;
    let mut line = Vec::new();
    for chunk in events.chunks(ROWS_PER_CHUNK) {
        let ready = cpu_bound(|| {
            for event in chunk {
                line.clear();
                ndjson_line(event.borrow(), &mut line);
                out.write_all(&line)?;
            }
            Ok(out.take())
        })
        .map_err(ndjson_error)?;
        sink.write(Bytes::from(ready))
            .await
            .map_err(WriteError::Store)?;
    }
    let tail = out.finish().map_err(ndjson_error)?;
    sink.write(Bytes::from(tail))
        .await
        .map_err(WriteError::Store)
}

/// A streaming compressor whose output can be taken while it runs.
enum Compressor {
    None(Vec<u8>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Compressor {
    fn new(compression: Compression) -> std::io::Result<Self> {
        Ok(match compression {
            Compression::None => Self::None(Vec::new()),
            Compression::Zstd => Self::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 3)?),
            Compression::Gzip | Compression::Snappy => Self::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            )),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Self::None(out) => out.write_all(bytes),
            Self::Gzip(e) => e.write_all(bytes),
            Self::Zstd(e) => e.write_all(bytes),
        }
    }

    /// The compressed bytes produced so far.
    fn take(&mut self) -> Vec<u8> {
        match self {
            Self::None(out) => std::mem::take(out),
            Self::Gzip(e) => std::mem::take(e.get_mut()),
            Self::Zstd(e) => std::mem::take(e.get_mut()),
        }
    }

    /// Ends the stream and returns the bytes not yet taken.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Self::None(out) => Ok(out),
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn round_trip(compression: Compression) -> Vec<u8> {
        let mut c = Compressor::new(compression).unwrap();
        let mut all = Vec::new();
        for i in 0..5000 {
            c.write_all(format!("line {i}\n").as_bytes()).unwrap();
            if i % 700 == 0 {
                all.extend(c.take());
            }
        }
        all.extend(c.finish().unwrap());
        all
    }

    #[test]
    fn chunked_output_is_one_valid_stream() {
        let expected: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let gz = round_trip(Compression::Gzip);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, expected);
        let zst = round_trip(Compression::Zstd);
        assert_eq!(
            zstd::stream::decode_all(&zst[..]).unwrap(),
            expected.as_bytes()
        );
        assert_eq!(round_trip(Compression::None), expected.as_bytes());
    }
}
