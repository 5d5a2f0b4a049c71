//! The embedded real reference data: US cities and drug names (see NOTICE for sources).

use crate::DatagenError;

/// `data/us_cities.csv`, derived by `tools/cities/derive_cities.py` (GeoNames + zipcodes).
pub const US_CITIES_CSV: &str = include_str!("../data/us_cities.csv");
/// `data/drugs.csv`, derived by `tools/cities/derive_drugs.py` (MedlinePlus names shipped in
/// PyPI drug-named-entity-recognition).
pub const DRUGS_CSV: &str = include_str!("../data/drugs.csv");

/// The simplemaps column layout of the city dimension, in order.
pub const CITY_COLUMNS: [&str; 17] = [
    "city",
    "city_ascii",
    "state_id",
    "state_name",
    "county_fips",
    "county_name",
    "lat",
    "lng",
    "population",
    "density",
    "source",
    "military",
    "incorporated",
    "timezone",
    "ranking",
    "zips",
    "id",
];

/// One row of the city dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    pub city: String,
    pub city_ascii: String,
    pub state_id: String,
    pub state_name: String,
    pub county_fips: Option<String>,
    pub county_name: Option<String>,
    pub lat: f64,
    pub lng: f64,
    pub population: i64,
    pub density: Option<f64>,
    pub source: String,
    pub military: Option<bool>,
    pub incorporated: Option<bool>,
    pub timezone: String,
    pub ranking: Option<i32>,
    pub zips: String,
    pub id: i64,
}

/// One drug: brand (or generic) name as CMS `drug_name`, and its generic name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drug {
    pub drug_name: String,
    pub generic_name: String,
}

fn bad(what: &str, line: usize, msg: impl std::fmt::Display) -> DatagenError {
    DatagenError::EmbeddedData(format!("{what} line {line}: {msg}"))
}

fn opt(s: &str) -> Option<String> {
    if s.is_empty() {
        None
    } else {
        Some(s.to_string())
    }
}

fn opt_bool(s: &str) -> Option<bool> {
    match s.to_ascii_uppercase().as_str() {
        "TRUE" => Some(true),
        "FALSE" => Some(false),
        _ => None,
    }
}

/// Parses the embedded city list.
pub fn cities() -> Result<Vec<City>, DatagenError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(US_CITIES_CSV.as_bytes());
    let header = rdr.headers().map_err(|e| bad("us_cities.csv", 1, e))?.clone();
    if header.iter().collect::<Vec<_>>() != CITY_COLUMNS {
        return Err(bad("us_cities.csv", 1, "unexpected header"));
    }
    let mut out = Vec::with_capacity(5300);
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let r = rec.map_err(|e| bad("us_cities.csv", line, e))?;
        let num = |idx: usize| -> Result<f64, DatagenError> {
            r[idx].parse::<f64>().map_err(|e| bad("us_cities.csv", line, e))
        };
        let int = |idx: usize| -> Result<i64, DatagenError> {
            r[idx].parse::<i64>().map_err(|e| bad("us_cities.csv", line, e))
        };
        out.push(City {
            city: r[0].to_string(),
            city_ascii: r[1].to_string(),
            state_id: r[2].to_string(),
            state_name: r[3].to_string(),
            county_fips: opt(&r[4]),
            county_name: opt(&r[5]),
            lat: num(6)?,
            lng: num(7)?,
            population: int(8)?,
            density: if r[9].is_empty() { None } else { Some(num(9)?) },
            source: r[10].to_string(),
            military: opt_bool(&r[11]),
            incorporated: opt_bool(&r[12]),
            timezone: r[13].to_string(),
            ranking: if r[14].is_empty() { None } else { Some(int(14)? as i32) },
            zips: r[15].to_string(),
            id: int(16)?,
        });
    }
    if out.is_empty() {
        return Err(bad("us_cities.csv", 0, "no cities"));
    }
    Ok(out)
}

/// Parses the embedded drug list.
pub fn drugs() -> Result<Vec<Drug>, DatagenError> {
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(DRUGS_CSV.as_bytes());
    let mut out = Vec::with_capacity(4000);
    for (i, rec) in rdr.records().enumerate() {
        let r = rec.map_err(|e| bad("drugs.csv", i + 2, e))?;
        if r.len() != 2 || r[0].is_empty() || r[1].is_empty() {
            return Err(bad("drugs.csv", i + 2, "expected drug_name,generic_name"));
        }
        out.push(Drug { drug_name: r[0].to_string(), generic_name: r[1].to_string() });
    }
    if out.is_empty() {
        return Err(bad("drugs.csv", 0, "no drugs"));
    }
    Ok(out)
}
