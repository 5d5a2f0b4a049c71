use std::collections::HashSet;
use std::path::Path;

use super::*;

const SEED_HEADER: &str = "npi,nppes_provider_last_org_name,nppes_provider_first_name,nppes_provider_city,nppes_provider_state,specialty_description,description_flag,drug_name,generic_name,bene_count,total_claim_count,total_30_day_fill_count,total_day_supply,total_drug_cost,bene_count_ge65,bene_count_ge65_suppress_flag,total_claim_count_ge65,ge65_suppress_flag,total_30_day_fill_count_ge65,total_day_supply_ge65,total_drug_cost_ge65,years_of_exp";
const CMS_HEADER: &str = "Prscrbr_NPI,Prscrbr_Last_Org_Name,Prscrbr_First_Name,Prscrbr_City,Prscrbr_State_Abrvtn,Prscrbr_State_FIPS,Prscrbr_Type,Prscrbr_Type_Src,Brnd_Name,Gnrc_Name,Tot_Clms,Tot_30day_Fills,Tot_Day_Suply,Tot_Drug_Cst,Tot_Benes,GE65_Sprsn_Flag,GE65_Tot_Clms,GE65_Tot_30day_Fills,GE65_Tot_Drug_Cst,GE65_Tot_Day_Suply,GE65_Bene_Sprsn_Flag,GE65_Tot_Benes";

fn run(dir: &Path, scale: f64, seed: u64, layout: Layout) -> DatagenReport {
    let opts = DatagenOptions { scale, out: dir.to_path_buf(), layout, seed };
    generate(&opts, &|_, _| {}).expect("generate")
}

fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    assert_eq!(v.pop(), Some(&b""[..]), "file must end with \\n");
    v
}

fn fields(line: &str) -> Vec<String> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(line.as_bytes());
    let rec = r.records().next().expect("one record").expect("parsable");
    rec.iter().map(str::to_string).collect()
}

/// Classification of one data row, the way the pipeline sees it (seed layout).
#[derive(Debug, Default)]
struct Counts {
    rows: u64,
    invalid_utf8: u64,
    too_many: u64,
    too_few: u64,
    missing_npi: u64,
    npi_no_digits: u64,
    missing_drug: u64,
    missing_claims: u64,
    malformed: u64,
    npis: HashSet<String>,
}

impl Counts {
    fn rejected(&self) -> u64 {
        self.invalid_utf8 + self.too_many + self.too_few + self.missing_npi + self.npi_no_digits + self.missing_drug
    }
}

fn is_num(s: &str, decimals: Option<usize>) -> bool {
    match decimals {
        None => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
        Some(d) => match s.split_once('.') {
            Some((a, b)) => is_num(a, None) && b.len() == d && is_num(b, None),
            None => false,
        },
    }
}

fn classify_seed(bytes: &[u8]) -> Counts {
    let ls = lines(bytes);
    assert_eq!(ls[0], SEED_HEADER.as_bytes());
    let mut c = Counts::default();
    for l in &ls[1..] {
        c.rows += 1;
        assert!(!l.contains(&b'\r'));
        let Ok(l) = std::str::from_utf8(l) else {
            c.invalid_utf8 += 1;
            continue;
        };
        let f = fields(l);
        if f.len() > 22 {
            c.too_many += 1;
            continue;
        }
        if f.len() < 22 {
            c.too_few += 1;
            continue;
        }
        if f[0].is_empty() {
            c.missing_npi += 1;
            continue;
        }
        if !f[0].bytes().any(|b| b.is_ascii_digit()) {
            c.npi_no_digits += 1;
            continue;
        }
        assert!(is_valid_npi_str(&f[0]), "invalid NPI {}", f[0]);
        if f[7].is_empty() {
            c.missing_drug += 1;
            continue;
        }
        c.npis.insert(f[0].clone());
        if f[10].is_empty() {
            c.missing_claims += 1;
            continue;
        }
        // numeric fields: empty (suppressed) or well-formed
        let spec: [(usize, Option<usize>); 8] =
            [(9, None), (11, Some(1)), (12, None), (13, Some(2)), (16, None), (18, Some(1)), (19, None), (20, Some(2))];
        let bad = spec.iter().any(|&(i, d)| !f[i].is_empty() && !is_num(&f[i], d));
        if bad {
            c.malformed += 1;
            continue;
        }
        // a clean row: check the shapes
        let n = |i: usize| -> Option<f64> { f[i].parse::<f64>().ok() };
        let claims = n(10).expect("claims");
        assert!(claims >= 11.0, "claims {claims} < 11");
        assert!(n(11).unwrap() >= claims, "fills < claims");
        assert!(n(12).unwrap() >= claims, "day supply < claims");
        assert!(n(13).unwrap() > 0.0);
        if let Some(b) = n(9) {
            assert!(b >= 1.0 && b <= claims, "bene {b} vs claims {claims}");
        }
        match f[17].as_str() {
            "*" | "#" => {
                assert!(f[16].is_empty() && f[18].is_empty() && f[19].is_empty() && f[20].is_empty())
            }
            "" => {
                assert!(n(16).unwrap() <= claims);
                assert!(n(18).unwrap() <= n(11).unwrap());
                assert!(n(19).unwrap() <= n(12).unwrap());
                assert!(n(20).unwrap() <= n(13).unwrap());
            }
            other => panic!("ge65 flag {other}"),
        }
        match f[15].as_str() {
            "*" | "#" => assert!(f[14].is_empty()),
            "" => {
                if let Some(b) = n(9) {
                    assert!(n(14).unwrap() <= b);
                }
            }
            other => panic!("bene ge65 flag {other}"),
        }
        assert!(f[6] == "S" || f[6] == "T");
        let y: u32 = f[21].strip_prefix("= ").expect("= NN").parse().unwrap();
        assert!((1..=60).contains(&y));
        assert!(!f[3].is_empty() && f[4].len() == 2);
    }
    c
}

#[test]
fn header_per_layout() {
    assert_eq!(Layout::Seed.header(), SEED_HEADER);
    assert_eq!(Layout::Cms.header(), CMS_HEADER);
    assert_eq!(Layout::Seed.columns().len(), 22);
    assert_eq!(Layout::Cms.columns().len(), 22);
    for layout in [Layout::Seed, Layout::Cms] {
        let dir = tempfile::tempdir().unwrap();
        let rep = run(dir.path(), 0.001, 1, layout);
        assert_eq!(rep.prescriber_file, dir.path().join("prescribers").join(layout.file_name()));
        let bytes = fs::read(&rep.prescriber_file).unwrap();
        let first = bytes.split(|&b| b == b'\n').next().unwrap();
        assert_eq!(first, layout.header().as_bytes());
    }
}

#[test]
fn deterministic_same_seed_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let ra = run(a.path(), 0.01, 42, Layout::Seed);
    let rb = run(b.path(), 0.01, 42, Layout::Seed);
    let rc = run(c.path(), 0.01, 43, Layout::Seed);
    assert_eq!(fs::read(&ra.prescriber_file).unwrap(), fs::read(&rb.prescriber_file).unwrap());
    assert_eq!(fs::read(&ra.cities_file).unwrap(), fs::read(&rb.cities_file).unwrap());
    assert_eq!(ra.dirty_rows, rb.dirty_rows);
    assert_eq!(ra.distinct_npis, rb.distinct_npis);
    assert_ne!(fs::read(&ra.prescriber_file).unwrap(), fs::read(&rc.prescriber_file).unwrap());
}

#[test]
fn row_counts_follow_scale() {
    assert_eq!(rows_for_scale(1.0), 1_329_329);
    assert_eq!(rows_for_scale(10.0), 13_293_290);
    assert_eq!(rows_for_scale(0.5), 664_665); // 664,664.5 rounds up
    assert_eq!(prescribers_for_scale(1.0), 200_000);
    assert_eq!(prescribers_for_scale(0.0001), 50);
    assert_eq!(prescribers_for_scale(0.000001), 1);
    for scale in [0.000001, 0.0001, 0.0037, 0.013] {
        let dir = tempfile::tempdir().unwrap();
        let rep = run(dir.path(), scale, 9, Layout::Seed);
        let expected = (1_329_329.0 * scale).round() as u64;
        assert_eq!(rep.prescriber_rows, expected);
        let bytes = fs::read(&rep.prescriber_file).unwrap();
        assert_eq!(lines(&bytes).len() as u64, expected + 1, "scale {scale}");
        assert!(rep.distinct_npis <= prescribers_for_scale(scale));
    }
}

#[test]
fn rejects_bad_scale() {
    for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let dir = tempfile::tempdir().unwrap();
        let opts = DatagenOptions { scale, out: dir.path().into(), layout: Layout::Seed, seed: 1 };
        assert!(matches!(generate(&opts, &|_, _| {}), Err(DatagenError::InvalidOptions(_))));
    }
}

#[test]
fn npis_valid_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run(dir.path(), 0.02, 5, Layout::Seed);
    let c = classify_seed(&fs::read(&rep.prescriber_file).unwrap());
    // every distinct valid NPI that appears is counted
    assert_eq!(c.npis.len() as u64, rep.distinct_npis);
    let p = prescribers_for_scale(0.02);
    assert!(rep.distinct_npis <= p && rep.distinct_npis + 5 >= p, "{} of {p}", rep.distinct_npis);
}

#[test]
fn dirty_rates_within_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let scale = 0.15; // ~200k rows
    let rep = run(dir.path(), scale, 2021, Layout::Seed);
    let c = classify_seed(&fs::read(&rep.prescriber_file).unwrap());
    assert_eq!(c.rows, rows_for_scale(scale));
    let check = |name: &str, got: u64, kind: DirtyKind| {
        let exp = c.rows as f64 * f64::from(kind.ppm()) / 1e6;
        let tol = 5.0 * exp.sqrt() + 5.0;
        assert!((got as f64 - exp).abs() <= tol, "{name}: got {got}, expected {exp:.0} ± {tol:.0}");
    };
    check("invalid utf8", c.invalid_utf8, DirtyKind::InvalidUtf8);
    check("too many", c.too_many, DirtyKind::TooManyFields);
    check("too few", c.too_few, DirtyKind::TooFewFields);
    check("missing npi", c.missing_npi, DirtyKind::MissingNpi);
    check("npi no digits", c.npi_no_digits, DirtyKind::NpiNoDigits);
    check("missing drug", c.missing_drug, DirtyKind::MissingDrugName);
    check("missing claims", c.missing_claims, DirtyKind::MissingClaimCount);
    check("malformed", c.malformed, DirtyKind::MalformedNumber);
    assert_eq!(rep.dirty_rows, c.rejected());
}

#[test]
fn layouts_hold_the_same_data() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let ra = run(a.path(), 0.003, 11, Layout::Seed);
    let rb = run(b.path(), 0.003, 11, Layout::Cms);
    assert_eq!(ra.prescriber_rows, rb.prescriber_rows);
    assert_eq!(ra.dirty_rows, rb.dirty_rows);
    assert_eq!(ra.distinct_npis, rb.distinct_npis);
    let sa = fs::read(&ra.prescriber_file).unwrap();
    let sb = fs::read(&rb.prescriber_file).unwrap();
    let (la, lb) = (lines(&sa), lines(&sb));
    for (x, y) in la[1..].iter().zip(&lb[1..]) {
        let (Ok(x), Ok(y)) = (std::str::from_utf8(x), std::str::from_utf8(y)) else {
            continue;
        };
        let (fx, fy) = (fields(x), fields(y));
        if fx.len() != 22 || fy.len() != 22 {
            continue;
        }
        assert_eq!(fx[0], fy[0]); // npi
        assert_eq!(fx[7], fy[8]); // drug_name = Brnd_Name
        assert_eq!(fx[10], fy[10]); // total_claim_count = Tot_Clms
        assert_eq!(fx[13], fy[13]); // total_drug_cost = Tot_Drug_Cst
        assert_eq!(fx[9], fy[14]); // bene_count = Tot_Benes
        assert_eq!(fx[20], fy[18]); // total_drug_cost_ge65 = GE65_Tot_Drug_Cst
        assert_eq!(fy[5].len(), 2); // state FIPS
    }
}

#[test]
fn quoting_and_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run(dir.path(), 0.05, 3, Layout::Seed);
    let bytes = fs::read(&rep.prescriber_file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains('\r'));
    assert!(text.contains(", JR\"") || text.contains(", SR\""), "some quoted name suffixes");
    assert!(text.contains(", LLC\"") || text.contains(", INC.\""), "some quoted org names");
    // mixed-case cities exist next to upper-case ones
    let c = lines(&bytes)[1..]
        .iter()
        .filter_map(|l| std::str::from_utf8(l).ok())
        .map(fields)
        .filter(|f| f.len() == 22)
        .filter(|f| f[3].chars().any(|ch| ch.is_lowercase()))
        .count();
    assert!(c > 0);
}

#[test]
fn cities_parquet_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run(dir.path(), 0.0001, 1, Layout::Cms);
    let file = fs::File::open(&rep.cities_file).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let mut n = 0;
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.schema(), cities_schema());
        n += batch.num_rows();
    }
    assert_eq!(n as u64, rep.cities);
    assert!((5000..5600).contains(&n), "{n} cities");
    let cities = embedded_cities().unwrap();
    let keys: HashSet<(String, String)> = cities.iter().map(|c| (c.state_id.clone(), c.city.to_uppercase())).collect();
    assert_eq!(keys.len(), cities.len(), "(state_id, upper(city)) is a key");
    assert!(cities.iter().any(|c| c.city == "New York" && c.state_id == "NY"));
    let drugs = embedded_drugs().unwrap();
    assert!((2000..=5000).contains(&drugs.len()));
    assert!(drugs.iter().any(|d| d.drug_name == "LIPITOR" && d.generic_name == "ATORVASTATIN"));
}

#[test]
fn prescriber_cities_join_the_dimension() {
    let dir = tempfile::tempdir().unwrap();
    let rep = run(dir.path(), 0.01, 8, Layout::Seed);
    let cities = embedded_cities().unwrap();
    let keys: HashSet<(String, String)> = cities.iter().map(|c| (c.state_id.clone(), c.city.to_uppercase())).collect();
    let bytes = fs::read(&rep.prescriber_file).unwrap();
    for l in &lines(&bytes)[1..] {
        let Ok(l) = std::str::from_utf8(l) else {
            continue;
        };
        let f = fields(l);
        if f.len() == 22 {
            assert!(keys.contains(&(f[4].clone(), f[3].to_uppercase())), "{} {}", f[3], f[4]);
        }
    }
}
