//! Printing result batches for `rxgate sql`.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use rxgate_common::{Error, Result};

use crate::cli::Format;

/// Writes batches to stdout in the chosen format.
pub fn print_batches(batches: &[RecordBatch], format: Format) -> Result<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let fail = |e: arrow::error::ArrowError| Error::internal(format!("formatting result: {e}"));
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches).map_err(fail)?;
            writeln!(out, "{table}")?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(&mut out);
            if batches.is_empty() {
                return Ok(());
            }
            for b in batches {
                w.write(b).map_err(fail)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b).map_err(fail)?;
            }
            w.finish().map_err(fail)?;
        }
    }
    Ok(())
}
