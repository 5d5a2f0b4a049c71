//! Times one run of the generator.
//!
//! `cargo run -p rxgate-datagen --release --example timing -- [SCALE] [OUT] [seed|cms] [SEED]`
use std::time::Instant;

use rxgate_datagen::{generate, DatagenOptions, Layout};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale: f64 = args.get(1).map(|s| s.parse().expect("scale")).unwrap_or(1.0);
    let out = args.get(2).cloned().unwrap_or_else(|| "/tmp/rxgate-datagen".into());
    let layout = match args.get(3).map(String::as_str) {
        Some("cms") => Layout::Cms,
        _ => Layout::Seed,
    };
    let seed: u64 = args.get(4).map(|s| s.parse().expect("seed")).unwrap_or(42);
    let opts = DatagenOptions { scale, out: out.into(), layout, seed };
    let t = Instant::now();
    let rep = generate(&opts, &|done, total| {
        if done == total {
            eprintln!("  {done}/{total} rows");
        }
    })
    .expect("generate");
    let secs = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&rep.prescriber_file).map(|m| m.len()).unwrap_or(0);
    println!("{rep:#?}");
    println!(
        "scale {scale} {layout:?}: {} rows, {:.1} MB in {secs:.2} s ({:.0} rows/s)",
        rep.prescriber_rows,
        bytes as f64 / 1e6,
        rep.prescriber_rows as f64 / secs
    );
}
