//! Printing result batches for `rxgate sql` and the `catalog` inspection commands.
//!
//! A reader that goes away (`rxgate catalog files t | head`) is not an error: the first
//! write that meets a closed pipe stops the output quietly ([`stdout_closed`]), and the
//! command ends with success.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::record_batch::RecordBatch;
use rxgate_common::Result;

use crate::cli::Format;

/// Set when a write to stdout met a closed pipe (EPIPE).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether stdout's reader has gone away: callers stop producing output.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// A write's outcome: a closed pipe is remembered and becomes `Ok`.
fn quiet_on_epipe<T: Default>(r: std::io::Result<T>) -> Result<T> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            Ok(T::default())
        }
        r => Ok(r?),
    }
}

/// Prints one line on stdout (like `println!`), quietly stopping when the reader went away.
pub fn line(text: impl std::fmt::Display) -> Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    quiet_on_epipe(writeln!(out, "{text}").and_then(|_| out.flush()))
}

/// Writes batches to stdout in the chosen format. JSON lines carry every column, `null` for
/// NULL values.
pub fn print_batches(batches: &[RecordBatch], format: Format) -> Result<()> {
    if stdout_closed() {
        return Ok(());
    }
    let out = std::io::stdout();
    let mut out = out.lock();
    quiet_on_epipe(write_batches(&mut out, batches, format).and_then(|_| out.flush()))
}

/// A writer that remembers the kind of the last IO error: Arrow's CSV writer turns IO
/// errors into text, which would hide a closed pipe.
struct Tracked<W> {
    inner: W,
    failed: Option<std::io::ErrorKind>,
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.failed = Some(e.kind()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| self.failed = Some(e.kind()))
    }
}

fn write_batches(out: &mut impl Write, batches: &[RecordBatch], format: Format) -> std::io::Result<()> {
    let mut tracked = Tracked { inner: out, failed: None };
    let result = write_formatted(&mut tracked, batches, format);
    match (result, tracked.failed) {
        (Err(_), Some(kind)) => Err(std::io::Error::from(kind)),
        (r, _) => r,
    }
}

fn write_formatted(out: &mut impl Write, batches: &[RecordBatch], format: Format) -> std::io::Result<()> {
    let fail = |e: arrow::error::ArrowError| match e {
        arrow::error::ArrowError::IoError(_, io) => io,
        e => std::io::Error::other(format!("formatting result: {e}")),
    };
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches).map_err(fail)?;
            writeln!(out, "{table}")?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b).map_err(fail)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(out);
            for b in batches {
                w.write(b).map_err(fail)?;
            }
            w.finish().map_err(fail)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn json_lines_keep_null_values() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true), Field::new("b", DataType::Utf8, true)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from(vec![Some(1), None])), Arc::new(StringArray::from(vec![None, Some("x")]))],
        )
        .unwrap();
        let mut out = Vec::new();
        write_batches(&mut out, &[batch], Format::Json).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1,\"b\":null}\n{\"a\":null,\"b\":\"x\"}\n");
    }

    #[test]
    fn a_closed_pipe_is_quiet() {
        let r: Result<()> = quiet_on_epipe(Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)));
        assert!(r.is_ok() && stdout_closed());
        STDOUT_CLOSED.store(false, Ordering::Relaxed);
        let r: Result<()> = quiet_on_epipe(Err(std::io::Error::other("disk full")));
        assert!(r.is_err());
    }
}
