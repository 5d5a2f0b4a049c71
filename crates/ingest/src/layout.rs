//! Raw prescriber file layouts, detected from the header line.

use rxgate_common::{Error, Result, StatusCode};

/// The canonical raw fields, in the seed file's order (DESIGN §3).
pub const SEED_FIELDS: [&str; 22] = [
    "npi",
    "nppes_provider_last_org_name",
    "nppes_provider_first_name",
    "nppes_provider_city",
    "nppes_provider_state",
    "specialty_description",
    "description_flag",
    "drug_name",
    "generic_name",
    "bene_count",
    "total_claim_count",
    "total_30_day_fill_count",
    "total_day_supply",
    "total_drug_cost",
    "bene_count_ge65",
    "bene_count_ge65_suppress_flag",
    "total_claim_count_ge65",
    "ge65_suppress_flag",
    "total_30_day_fill_count_ge65",
    "total_day_supply_ge65",
    "total_drug_cost_ge65",
    "years_of_exp",
];

/// The current CMS "Part D Prescribers by Provider and Drug" column for each canonical field.
const CMS_FIELDS: [(&str, &str); 21] = [
    ("npi", "prscrbr_npi"),
    ("nppes_provider_last_org_name", "prscrbr_last_org_name"),
    ("nppes_provider_first_name", "prscrbr_first_name"),
    ("nppes_provider_city", "prscrbr_city"),
    ("nppes_provider_state", "prscrbr_state_abrvtn"),
    ("specialty_description", "prscrbr_type"),
    ("description_flag", "prscrbr_type_src"),
    ("drug_name", "brnd_name"),
    ("generic_name", "gnrc_name"),
    ("bene_count", "tot_benes"),
    ("total_claim_count", "tot_clms"),
    ("total_30_day_fill_count", "tot_30day_fills"),
    ("total_day_supply", "tot_day_suply"),
    ("total_drug_cost", "tot_drug_cst"),
    ("bene_count_ge65", "ge65_tot_benes"),
    ("bene_count_ge65_suppress_flag", "ge65_bene_sprsn_flag"),
    ("total_claim_count_ge65", "ge65_tot_clms"),
    ("ge65_suppress_flag", "ge65_sprsn_flag"),
    ("total_30_day_fill_count_ge65", "ge65_tot_30day_fills"),
    ("total_day_supply_ge65", "ge65_tot_day_suply"),
    ("total_drug_cost_ge65", "ge65_tot_drug_cst"),
];

/// Which layout a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutKind {
    /// `USA_Presc_Medicare_Data_2021.csv` as the seed project received it.
    Seed,
    /// The current CMS public-use file.
    Cms,
}

/// A detected layout: for each canonical field, the source column holding it.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Detected kind.
    pub kind: LayoutKind,
    /// Number of columns every data line must have.
    pub width: usize,
    /// `columns[i]` is the source column of `SEED_FIELDS[i]`, if the layout has it.
    pub columns: [Option<usize>; 22],
}

impl Layout {
    /// Detects the layout from the header fields (case-insensitive, BOM and quotes tolerated).
    pub fn detect(header: &[String]) -> Result<Self> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().trim_matches('"').to_ascii_lowercase())
            .collect();
        let find = |name: &str| names.iter().position(|n| n == name);
        let mut columns = [None; 22];
        let kind = if find("npi").is_some() && find("drug_name").is_some() {
            for (i, f) in SEED_FIELDS.iter().enumerate() {
                columns[i] = find(f);
            }
            LayoutKind::Seed
        } else if find("prscrbr_npi").is_some() && find("brnd_name").is_some() {
            for (canonical, cms) in CMS_FIELDS {
                let i = SEED_FIELDS.iter().position(|f| *f == canonical).expect("canonical field");
                columns[i] = find(cms);
            }
            LayoutKind::Cms
        } else {
            return Err(Error::new(
                StatusCode::BadInputLayout,
                format!(
                    "unrecognised prescriber header (expected the seed layout with npi,…,drug_name or the CMS layout with Prscrbr_NPI,…,Brnd_Name); got: {}",
                    names.iter().take(6).cloned().collect::<Vec<_>>().join(",")
                ),
            ));
        };
        Ok(Self { kind, width: names.len(), columns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn detects_seed_layout() {
        let l = Layout::detect(&strings(&SEED_FIELDS.join(","))).unwrap();
        assert_eq!(l.kind, LayoutKind::Seed);
        assert_eq!(l.width, 22);
        assert_eq!(l.columns[21], Some(21));
    }

    #[test]
    fn detects_cms_layout_with_bom() {
        let h = "\u{feff}Prscrbr_NPI,Prscrbr_Last_Org_Name,Prscrbr_First_Name,Prscrbr_City,Prscrbr_State_Abrvtn,Prscrbr_State_FIPS,Prscrbr_Type,Prscrbr_Type_Src,Brnd_Name,Gnrc_Name,Tot_Clms";
        let l = Layout::detect(&strings(h)).unwrap();
        assert_eq!(l.kind, LayoutKind::Cms);
        assert_eq!(l.columns[0], Some(0));
        assert_eq!(l.columns[7], Some(8)); // drug_name ← Brnd_Name
        assert_eq!(l.columns[10], Some(10)); // total_claim_count ← Tot_Clms
        assert_eq!(l.columns[21], None); // no years_of_exp in CMS files
    }

    #[test]
    fn rejects_unknown_header() {
        let e = Layout::detect(&strings("a,b,c")).unwrap_err();
        assert_eq!(e.code, StatusCode::BadInputLayout);
    }
}
