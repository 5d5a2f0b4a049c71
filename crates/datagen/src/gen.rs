//! Prescriber-drug row generation: the model (prescribers, drugs, cities) and the
//! hand-written CSV formatting of one chunk.
//!
//! A chunk is an independent slice of prescribers *and* of rows: chunk `c` of `C` owns an even
//! share of the prescribers and an even share of the rows, and draws everything from a ChaCha8
//! stream seeded by `(seed, c)`. Chunks can therefore be generated in any order on any thread
//! and concatenated in index order to give the same bytes.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{City, Drug};
use crate::names::{FIRST_NAMES, LAST_NAMES, NAME_SUFFIXES, ORG_SUFFIXES, SPECIALTIES, STATES, TOP_DRUGS};
use crate::npi::npi_for_index;
use crate::{DirtyKind, Layout, DIRTY_KINDS};

/// Prescribers per chunk (before the even split); ~55k rows per chunk at the default ratio.
pub(crate) const PRESCRIBERS_PER_CHUNK: u64 = 8192;
/// Upper bound on rows (distinct drugs) of one prescriber.
const MAX_ROWS_PER_PRESCRIBER: u32 = 1000;

// ---------------------------------------------------------------------------------------------
// small deterministic helpers

pub(crate) fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn unit_from(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Standard normal from two uniforms in (0,1) (Box-Muller).
fn normal_from(u1: f64, u2: f64) -> f64 {
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0,1]
    let u2: f64 = rng.gen::<f64>();
    normal_from(u1, u2)
}

/// Index into a cumulative weight table (last element = total).
fn pick(cdf: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = *cdf.last().expect("non-empty cdf");
    let x = rng.gen::<f64>() * total;
    cdf.partition_point(|&c| c <= x).min(cdf.len() - 1)
}

fn cdf_from(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 0.0;
    weights
        .map(|w| {
            acc += w;
            acc
        })
        .collect()
}

/// Even split of `total` items into `parts`: (start, len) of part `i`.
pub(crate) fn split(total: u64, parts: u64, i: u64) -> (u64, u64) {
    let base = total / parts;
    let rem = total % parts;
    let start = i * base + i.min(rem);
    let len = base + u64::from(i < rem);
    (start, len)
}

// ---------------------------------------------------------------------------------------------
// the model

pub(crate) struct DrugM {
    name: String,
    generic: String,
    /// cost of one 30-day fill, in cents
    fill_price_cents: f64,
}

pub(crate) struct CityM {
    upper: String,
    orig: String,
    state: u8,
}

/// Everything a chunk needs, built once from the embedded data.
pub(crate) struct Model {
    drugs: Vec<DrugM>, // sorted by drug_name, so sorting indices sorts names
    rank_to_drug: Vec<u32>,
    drug_cdf: Vec<f64>,
    cities: Vec<CityM>,
    city_cdf: Vec<f64>,
    spec_cdf: Vec<f64>,
    last_cdf: Vec<f64>,
    first_cdf: Vec<f64>,
    seed: u64,
    layout: Layout,
}

impl Model {
    pub(crate) fn new(
        cities: &[City],
        drugs: &[Drug],
        seed: u64,
        layout: Layout,
    ) -> Result<Model, crate::DatagenError> {
        let mut ds: Vec<DrugM> = drugs
            .iter()
            .map(|d| {
                let h = fnv1a(&d.drug_name);
                let z = normal_from(unit_from(splitmix64(h)), unit_from(splitmix64(h ^ 1)));
                let brand = d.drug_name != d.generic_name;
                let price = if brand {
                    (12_000f64.ln() + 1.2 * z).exp().clamp(500.0, 3_000_000.0)
                } else {
                    (900f64.ln() + 0.9 * z).exp().clamp(50.0, 500_000.0)
                };
                DrugM { name: d.drug_name.clone(), generic: d.generic_name.clone(), fill_price_cents: price }
            })
            .collect();
        ds.sort_by(|a, b| a.name.cmp(&b.name).then(a.generic.cmp(&b.generic)));
        ds.dedup_by(|a, b| a.name == b.name);

        // popularity: well-known Part D drugs first, then a fixed hash order
        let mut used = vec![false; ds.len()];
        let mut rank_to_drug = Vec::with_capacity(ds.len());
        for t in TOP_DRUGS {
            if let Ok(i) = ds.binary_search_by(|d| d.name.as_str().cmp(t)) {
                if !used[i] {
                    used[i] = true;
                    rank_to_drug.push(i as u32);
                }
            }
        }
        let mut rest: Vec<u32> = (0..ds.len() as u32).filter(|&i| !used[i as usize]).collect();
        rest.sort_by_key(|&i| (fnv1a(&ds[i as usize].name), i));
        rank_to_drug.extend(rest);
        let drug_cdf = cdf_from((0..ds.len()).map(|r| 1.0 / (r as f64 + 10.0)));

        let mut cs = Vec::with_capacity(cities.len());
        let mut cw = Vec::with_capacity(cities.len());
        for c in cities {
            let Some(st) = STATES.iter().position(|s| s.0 == c.state_id) else {
                continue;
            };
            cs.push(CityM { upper: c.city.to_uppercase(), orig: c.city.clone(), state: st as u8 });
            cw.push(c.population.max(1) as f64);
        }
        if cs.is_empty() || ds.is_empty() {
            return Err(crate::DatagenError::EmbeddedData("no usable cities or drugs".into()));
        }
        Ok(Model {
            drugs: ds,
            rank_to_drug,
            drug_cdf,
            city_cdf: cdf_from(cw.into_iter()),
            cities: cs,
            spec_cdf: cdf_from(SPECIALTIES.iter().map(|s| f64::from(s.1))),
            last_cdf: cdf_from((0..LAST_NAMES.len()).map(|r| 1.0 / (r as f64 + 8.0))),
            first_cdf: cdf_from((0..FIRST_NAMES.len()).map(|r| 1.0 / (r as f64 + 8.0))),
            seed,
            layout,
        })
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn drug_count(&self) -> usize {
        self.drugs.len()
    }
}

// ---------------------------------------------------------------------------------------------
// prescribers

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Person,
    Suffixed(u8),
    Org(u8),
}

struct Prescriber {
    npi: u64,
    last: u16,
    first: u16,
    kind: NameKind,
    city: u32,
    mixed_case_city: bool,
    specialty: u8,
    type_src_taxonomy: bool,
    years: u8,
    /// log-scale volume multiplier of claims
    vol_ln: f64,
    /// share of claims for beneficiaries aged 65+
    ge65_share: f64,
    /// weight for the number of drug rows
    row_weight: f64,
}

fn new_prescriber(m: &Model, index: u64, rng: &mut ChaCha8Rng) -> Prescriber {
    let u: f64 = rng.gen();
    let kind = if u < 0.008 {
        NameKind::Suffixed(rng.gen_range(0..NAME_SUFFIXES.len()) as u8)
    } else if u < 0.018 {
        NameKind::Org(rng.gen_range(0..ORG_SUFFIXES.len()) as u8)
    } else {
        NameKind::Person
    };
    let last = pick(&m.last_cdf, rng) as u16;
    let first = pick(&m.first_cdf, rng) as u16;
    let city = pick(&m.city_cdf, rng) as u32;
    let mixed_case_city = rng.gen::<f64>() < 0.05;
    let specialty = pick(&m.spec_cdf, rng) as u8;
    let type_src_taxonomy = rng.gen::<f64>() < 0.15;
    // triangular on 1..=60, peak ~30: ~70% fall in 20..=50
    let years = (1.0 + (rng.gen::<f64>() + rng.gen::<f64>()) * 30.0).floor().clamp(1.0, 60.0) as u8;
    let vol_ln = 0.5 * normal(rng);
    // Medicare is mostly 65+: many prescribers see (almost) only 65+ patients
    let ge65_kind: f64 = rng.gen();
    let ge65_u: f64 = rng.gen();
    let ge65_share = if ge65_kind < 0.1 {
        ge65_u * 0.5
    } else if ge65_kind < 0.45 {
        1.0
    } else {
        0.6 + 0.4 * ge65_u
    };
    let row_weight = normal(rng).exp();
    Prescriber {
        npi: npi_for_index(index, m.seed),
        last,
        first,
        kind,
        city,
        mixed_case_city,
        specialty,
        type_src_taxonomy,
        years,
        vol_ln,
        ge65_share,
        row_weight,
    }
}

// ---------------------------------------------------------------------------------------------
// formatting

/// Logical fields (seed order, plus the CMS-only state FIPS at the end).
mod f {
    pub const NPI: usize = 0;
    pub const LAST: usize = 1;
    pub const FIRST: usize = 2;
    pub const CITY: usize = 3;
    pub const STATE: usize = 4;
    pub const SPEC: usize = 5;
    pub const FLAG: usize = 6;
    pub const DRUG: usize = 7;
    pub const GENERIC: usize = 8;
    pub const BENE: usize = 9;
    pub const CLAIMS: usize = 10;
    pub const FILLS: usize = 11;
    pub const DAYS: usize = 12;
    pub const COST: usize = 13;
    pub const BENE65: usize = 14;
    pub const BENE65_FLAG: usize = 15;
    pub const CLAIMS65: usize = 16;
    pub const GE65_FLAG: usize = 17;
    pub const FILLS65: usize = 18;
    pub const DAYS65: usize = 19;
    pub const COST65: usize = 20;
    pub const YEARS: usize = 21;
    pub const STATE_FIPS: usize = 22;
    pub const N: usize = 23;
}

const SEED_ORDER: [usize; 22] = [
    f::NPI,
    f::LAST,
    f::FIRST,
    f::CITY,
    f::STATE,
    f::SPEC,
    f::FLAG,
    f::DRUG,
    f::GENERIC,
    f::BENE,
    f::CLAIMS,
    f::FILLS,
    f::DAYS,
    f::COST,
    f::BENE65,
    f::BENE65_FLAG,
    f::CLAIMS65,
    f::GE65_FLAG,
    f::FILLS65,
    f::DAYS65,
    f::COST65,
    f::YEARS,
];

const CMS_ORDER: [usize; 22] = [
    f::NPI,
    f::LAST,
    f::FIRST,
    f::CITY,
    f::STATE,
    f::STATE_FIPS,
    f::SPEC,
    f::FLAG,
    f::DRUG,
    f::GENERIC,
    f::CLAIMS,
    f::FILLS,
    f::DAYS,
    f::COST,
    f::BENE,
    f::GE65_FLAG,
    f::CLAIMS65,
    f::FILLS65,
    f::COST65,
    f::DAYS65,
    f::BENE65_FLAG,
    f::BENE65,
];

/// Numeric fields that may receive a malformed value (never npi, never total_claim_count).
const MALFORMABLE: [usize; 8] = [f::BENE, f::FILLS, f::DAYS, f::COST, f::CLAIMS65, f::FILLS65, f::DAYS65, f::COST65];
const MALFORMED_VALUES: [&[u8]; 6] = [b"12x", b"N/A", b"-", b"1.2.3", b"abc", b"$45"];

#[derive(Clone, Copy)]
enum V<'a> {
    Empty,
    /// concatenation of up to three byte strings, quoted if it contains a comma or quote
    S(&'a [u8], &'a [u8], &'a [u8]),
    U(u64),
    /// a number in tenths, printed with one decimal
    Tenths(u64),
    /// a number in cents, printed with two decimals
    Cents(u64),
    /// years of experience, printed as "= NN"
    Years(u8),
}

fn s(b: &[u8]) -> V<'_> {
    V::S(b, b"", b"")
}

fn put_u(buf: &mut Vec<u8>, n: u64) {
    let mut b = itoa::Buffer::new();
    buf.extend_from_slice(b.format(n).as_bytes());
}

fn put(buf: &mut Vec<u8>, v: V<'_>) {
    match v {
        V::Empty => {}
        V::S(a, b, c) => {
            let needs_quotes = [a, b, c].iter().any(|p| p.iter().any(|&ch| ch == b',' || ch == b'"'));
            if needs_quotes {
                buf.push(b'"');
                for p in [a, b, c] {
                    for &ch in p {
                        if ch == b'"' {
                            buf.push(b'"');
                        }
                        buf.push(ch);
                    }
                }
                buf.push(b'"');
            } else {
                buf.extend_from_slice(a);
                buf.extend_from_slice(b);
                buf.extend_from_slice(c);
            }
        }
        V::U(n) => put_u(buf, n),
        V::Tenths(n) => {
            put_u(buf, n / 10);
            buf.push(b'.');
            buf.push(b'0' + (n % 10) as u8);
        }
        V::Cents(n) => {
            put_u(buf, n / 100);
            buf.push(b'.');
            let c = (n % 100) as u8;
            buf.push(b'0' + c / 10);
            buf.push(b'0' + c % 10);
        }
        V::Years(y) => {
            buf.extend_from_slice(b"= ");
            put_u(buf, u64::from(y));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// one chunk

/// What a generated chunk hands back to the writer.
pub(crate) struct ChunkOut {
    pub buf: Vec<u8>,
    pub rows: u64,
    /// rows the pipeline must reject (see [`DirtyKind::is_reject`])
    pub rejected: u64,
    /// per dirty kind, in [`DIRTY_KINDS`] order
    pub dirty: [u64; DIRTY_KINDS.len()],
    /// prescribers of this chunk whose NPI appears on at least one row that is not rejected
    pub npis_seen: u64,
}

/// The dirty kind of a row from a uniform draw in 0..1_000_000 (parts per million).
fn dirty_kind(ppm: u32) -> Option<DirtyKind> {
    let mut acc = 0;
    for k in DIRTY_KINDS {
        acc += k.ppm();
        if ppm < acc {
            return Some(k);
        }
    }
    None
}

/// Generates chunk `c` of `chunks`, given the totals of rows and prescribers.
pub(crate) fn gen_chunk(m: &Model, rows: u64, prescribers: u64, chunks: u64, c: u64) -> ChunkOut {
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(m.seed ^ splitmix64(c.wrapping_add(1))));
    let (p0, k) = split(prescribers, chunks, c);
    let (_, r) = split(rows, chunks, c);
    let order: &[usize] = match m.layout {
        Layout::Seed => &SEED_ORDER,
        Layout::Cms => &CMS_ORDER,
    };

    let ps: Vec<Prescriber> = (0..k).map(|j| new_prescriber(m, p0 + j, &mut rng)).collect();

    // rows per prescriber: at least one each, the rest by a lognormal weight
    let cap = MAX_ROWS_PER_PRESCRIBER.min(m.drugs.len() as u32);
    let mut counts = vec![1u32; k as usize];
    if k > 0 {
        let wcdf = cdf_from(ps.iter().map(|p| p.row_weight));
        let extra = r.saturating_sub(k);
        assert!(r <= k * u64::from(cap), "chunk {c}: {r} rows cannot be spread over {k} prescribers");
        for _ in 0..extra {
            let mut j = pick(&wcdf, &mut rng);
            while counts[j] >= cap {
                j = (j + 1) % counts.len();
            }
            counts[j] += 1;
        }
    }

    let mut out = ChunkOut {
        buf: Vec::with_capacity(r as usize * 210),
        rows: 0,
        rejected: 0,
        dirty: [0; DIRTY_KINDS.len()],
        npis_seen: 0,
    };
    let ndrugs = m.drugs.len();
    let mut stamp = vec![u32::MAX; ndrugs];
    let mut picked: Vec<u32> = Vec::with_capacity(cap as usize);
    let mut npi_buf = itoa::Buffer::new();

    for (j, p) in ps.iter().enumerate() {
        // distinct drugs, by popularity
        picked.clear();
        let tag = j as u32;
        for _ in 0..counts[j] {
            let mut d = m.rank_to_drug[pick(&m.drug_cdf, &mut rng)];
            let mut tries = 0;
            while stamp[d as usize] == tag {
                tries += 1;
                d = if tries < 20 { m.rank_to_drug[pick(&m.drug_cdf, &mut rng)] } else { (d + 1) % ndrugs as u32 };
            }
            stamp[d as usize] = tag;
            picked.push(d);
        }
        picked.sort_unstable();

        // fixed per-prescriber strings
        let mut npi_arr = [0u8; 10];
        npi_arr.copy_from_slice(npi_buf.format(p.npi).as_bytes());
        let last = LAST_NAMES[p.last as usize].as_bytes();
        let (last_tail, first): (&[u8], &[u8]) = match p.kind {
            NameKind::Person => (b"", FIRST_NAMES[p.first as usize].as_bytes()),
            NameKind::Suffixed(i) => (NAME_SUFFIXES[i as usize].as_bytes(), FIRST_NAMES[p.first as usize].as_bytes()),
            NameKind::Org(i) => (ORG_SUFFIXES[i as usize].as_bytes(), b""),
        };
        let city = &m.cities[p.city as usize];
        let city_b = if p.mixed_case_city { city.orig.as_bytes() } else { city.upper.as_bytes() };
        let st = STATES[city.state as usize];
        let spec = SPECIALTIES[p.specialty as usize].0.as_bytes();
        let flag: &[u8] = if p.type_src_taxonomy { b"T" } else { b"S" };
        let mut seen = false;

        for &d in &picked {
            let drug = &m.drugs[d as usize];
            // --- values
            let claims = (11.0 + (2.9 + p.vol_ln + 1.15 * normal(&mut rng)).exp()).min(250_000.0).floor() as u64;
            let ninety: bool = rng.gen::<f64>() < 0.35;
            let u_extra: f64 = rng.gen();
            let extra_t = if ninety {
                (claims as f64 * u_extra * 20.0).round() as u64
            } else {
                (claims as f64 * u_extra * 1.5).floor() as u64
            };
            let fills_t = claims * 10 + extra_t;
            let days =
                ((fills_t as f64 / 10.0) * 30.0 * (0.85 + 0.15 * rng.gen::<f64>())).round().max(claims as f64) as u64;
            let cost_c = ((fills_t as f64 / 10.0) * drug.fill_price_cents * (0.85 + 0.3 * rng.gen::<f64>()))
                .round()
                .max(1.0) as u64;
            let per_bene = (rng.gen::<f64>() * 12f64.ln()).exp();
            let bene = ((claims as f64 / per_bene).ceil() as u64).clamp(1, claims);
            let noise = 0.05 * normal(&mut rng);
            let share = if p.ge65_share >= 1.0 { 1.0 } else { (p.ge65_share + noise).clamp(0.0, 1.0) };
            let c65 = ((claims as f64 * share).round() as u64).min(claims);
            let b65 = ((bene as f64 * share).round() as u64).min(bene).min(c65).max(u64::from(c65 > 0));
            let bene_blank = bene < 11 && rng.gen::<f64>() < 0.9;
            let dirty = dirty_kind(rng.gen_range(0..1_000_000u32));
            let malformed_at = MALFORMABLE[rng.gen_range(0..MALFORMABLE.len())];
            let malformed_val = MALFORMED_VALUES[rng.gen_range(0..MALFORMED_VALUES.len())];

            // --- fields
            let mut v = [V::Empty; f::N];
            v[f::NPI] = s(&npi_arr);
            v[f::LAST] = V::S(last, last_tail, b"");
            v[f::FIRST] = s(first);
            v[f::CITY] = s(city_b);
            v[f::STATE] = s(st.0.as_bytes());
            v[f::STATE_FIPS] = s(st.2.as_bytes());
            v[f::SPEC] = s(spec);
            v[f::FLAG] = s(flag);
            v[f::DRUG] = s(drug.name.as_bytes());
            v[f::GENERIC] = s(drug.generic.as_bytes());
            v[f::BENE] = if bene_blank { V::Empty } else { V::U(bene) };
            v[f::CLAIMS] = V::U(claims);
            v[f::FILLS] = V::Tenths(fills_t);
            v[f::DAYS] = V::U(days);
            v[f::COST] = V::Cents(cost_c);
            // 65+ claims: primary suppression "*" for 1..=10, complementary "#" when the
            // under-65 remainder is 1..=10; the other 65+ measures go blank with them
            let o65 = claims - c65;
            if (1..=10).contains(&c65) {
                v[f::GE65_FLAG] = s(b"*");
            } else if (1..=10).contains(&o65) {
                v[f::GE65_FLAG] = s(b"#");
            } else {
                v[f::CLAIMS65] = V::U(c65);
                v[f::FILLS65] = V::Tenths(fills_t * c65 / claims);
                v[f::DAYS65] = V::U(days * c65 / claims);
                v[f::COST65] = V::Cents(cost_c * c65 / claims);
            }
            if (1..=10).contains(&b65) {
                v[f::BENE65_FLAG] = s(b"*");
            } else if (1..=10).contains(&(bene - b65)) {
                v[f::BENE65_FLAG] = s(b"#");
            } else {
                v[f::BENE65] = V::U(b65);
            }
            v[f::YEARS] = V::Years(p.years);

            // --- dirt
            let mut extra_field = false;
            let mut drop_last = false;
            match dirty {
                None => {}
                Some(DirtyKind::MissingNpi) => v[f::NPI] = V::Empty,
                Some(DirtyKind::NpiNoDigits) => v[f::NPI] = s(b"N/A"),
                Some(DirtyKind::MissingDrugName) => v[f::DRUG] = V::Empty,
                Some(DirtyKind::MissingClaimCount) => v[f::CLAIMS] = V::Empty,
                Some(DirtyKind::MalformedNumber) => v[malformed_at] = s(malformed_val),
                Some(DirtyKind::TooManyFields) => extra_field = true,
                Some(DirtyKind::TooFewFields) => drop_last = true,
                Some(DirtyKind::InvalidUtf8) => {
                    v[f::LAST] = V::S(&last[..1], b"\xFF", &last[1..]);
                }
            }
            if let Some(k) = dirty {
                out.dirty[k as usize] += 1;
                if k.is_reject() {
                    out.rejected += 1;
                }
            }
            if !dirty.is_some_and(DirtyKind::is_reject) {
                seen = true;
            }

            let n = if drop_last { order.len() - 1 } else { order.len() };
            for (i, &fi) in order[..n].iter().enumerate() {
                if i > 0 {
                    out.buf.push(b',');
                }
                put(&mut out.buf, v[fi]);
                if extra_field && fi == f::LAST {
                    // an unquoted name suffix: one field too many, as real exports have
                    out.buf.extend_from_slice(b", JR");
                }
            }
            out.buf.push(b'\n');
            out.rows += 1;
        }
        if seen {
            out.npis_seen += 1;
        }
    }
    debug_assert_eq!(out.rows, r);
    out
}

/// The header line (with `\n`) of a layout.
pub(crate) fn header(layout: Layout) -> &'static str {
    match layout {
        Layout::Seed => concat!(
            "npi,nppes_provider_last_org_name,nppes_provider_first_name,nppes_provider_city,",
            "nppes_provider_state,specialty_description,description_flag,drug_name,generic_name,",
            "bene_count,total_claim_count,total_30_day_fill_count,total_day_supply,",
            "total_drug_cost,bene_count_ge65,bene_count_ge65_suppress_flag,",
            "total_claim_count_ge65,ge65_suppress_flag,total_30_day_fill_count_ge65,",
            "total_day_supply_ge65,total_drug_cost_ge65,years_of_exp\n"
        ),
        Layout::Cms => concat!(
            "Prscrbr_NPI,Prscrbr_Last_Org_Name,Prscrbr_First_Name,Prscrbr_City,",
            "Prscrbr_State_Abrvtn,Prscrbr_State_FIPS,Prscrbr_Type,Prscrbr_Type_Src,Brnd_Name,",
            "Gnrc_Name,Tot_Clms,Tot_30day_Fills,Tot_Day_Suply,Tot_Drug_Cst,Tot_Benes,",
            "GE65_Sprsn_Flag,GE65_Tot_Clms,GE65_Tot_30day_Fills,GE65_Tot_Drug_Cst,",
            "GE65_Tot_Day_Suply,GE65_Bene_Sprsn_Flag,GE65_Tot_Benes\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything() {
        for (total, parts) in [(10u64, 3u64), (1, 1), (1_329_329, 25), (7, 7)] {
            let mut next = 0;
            for i in 0..parts {
                let (s, l) = split(total, parts, i);
                assert_eq!(s, next);
                next += l;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn quoting() {
        let mut b = Vec::new();
        put(&mut b, V::S(b"SMITH", b", JR", b""));
        put(&mut b, V::S(b"A\"B", b"", b""));
        put(&mut b, V::Cents(1205));
        put(&mut b, V::Tenths(7));
        put(&mut b, V::Years(5));
        assert_eq!(b, b"\"SMITH, JR\"\"A\"\"B\"12.050.7= 5");
    }

    #[test]
    fn top_drugs_exist() {
        let ds = crate::data::drugs().unwrap();
        for t in TOP_DRUGS {
            assert!(ds.iter().any(|d| d.drug_name == *t), "{t} missing from drugs.csv");
        }
    }
}
