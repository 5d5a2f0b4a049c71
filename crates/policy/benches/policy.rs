//! Hot paths of policy enforcement: the mask functions over a batch of values, and the plan
//! rewrite a session does when it resolves a secured table (`cargo bench -p rxgate-policy`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::TableReference;
use datafusion::logical_expr::{ColumnarValue, LogicalTableSource, ScalarFunctionArgs};
use datafusion::prelude::SessionContext;
use rxgate_policy::{redact, show_last, MaskFunctions, MaskKind, Policy, Principal, PseudonymKey};

const ROWS: usize = 8192;

fn npis() -> Vec<String> {
    (0..ROWS).map(|i| format!("{:010}", 1_000_000_000u64 + i as u64 * 7919)).collect()
}

fn masks(c: &mut Criterion) {
    let values = npis();
    let names: Vec<String> = (0..ROWS).map(|i| format!("Prescriber-{i} Smith")).collect();
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("redact", |b| b.iter(|| names.iter().map(|n| redact(n).len()).sum::<usize>()));
    g.bench_function("show_last_4", |b| b.iter(|| values.iter().map(|n| show_last(n, 4).len()).sum::<usize>()));
    let key = PseudonymKey::new("k1", b"bench key bench key bench key 32");
    g.bench_function("pseudonym_text", |b| b.iter(|| values.iter().map(|n| key.text(n).len()).sum::<usize>()));
    // The pseudonym UDF as DataFusion calls it: one batch of 8192 strings.
    let schema = Schema::new(vec![Field::new("npi", DataType::Utf8, true)]);
    let df_schema = datafusion::common::DFSchema::try_from(schema.clone()).unwrap();
    let f = MaskFunctions::new(Some(key.clone()));
    let column = datafusion::common::Column::from_name("npi");
    let expr = f.expr(&MaskKind::Pseudonym, &column, &DataType::Utf8, &df_schema, &|_, _| unreachable!()).unwrap();
    let datafusion::logical_expr::Expr::ScalarFunction(call) = expr else { panic!("not a call") };
    let array: ArrayRef = Arc::new(StringArray::from(values.clone()));
    let field = Arc::new(Field::new("npi", DataType::Utf8, true));
    g.bench_function("pseudonym_udf_batch", |b| {
        b.iter(|| {
            let args = ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(array.clone())],
                arg_fields: vec![field.clone()],
                number_rows: ROWS,
                return_field: field.clone(),
                config_options: Arc::new(Default::default()),
            };
            call.func.invoke_with_args(args).unwrap()
        })
    });
    g.finish();
}

const POLICY: &str = include_str!("../../../catalog/policies.toml");

fn rewrite(c: &mut Criterion) {
    let policy = Policy::parse(POLICY, "catalog/policies.toml").unwrap();
    let columns: Vec<String> = [
        "npi",
        "presc_last_name",
        "presc_first_name",
        "presc_full_name",
        "presc_city",
        "presc_state",
        "presc_specialty",
        "drug_name",
        "generic_name",
        "bene_count",
        "trx_cnt",
        "total_drug_cost",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let t = if matches!(c.as_str(), "bene_count" | "trx_cnt") { DataType::Int64 } else { DataType::Utf8 };
            let t = if c == "total_drug_cost" { DataType::Float64 } else { t };
            Field::new(c, t, true)
        })
        .collect();
    let source = Arc::new(LogicalTableSource::new(Arc::new(Schema::new(fields))));
    let analyst = Principal { user: "ann".into(), roles: vec!["analyst".into()], attributes: Default::default() };
    let masks = MaskFunctions::new(Some(PseudonymKey::new("k1", b"k")));
    let ctx = SessionContext::new();
    let state = ctx.state();
    let sql = |s: &str, schema: &datafusion::common::DFSchema| state.create_logical_expr(s, schema);
    let auditor = Principal {
        user: "auditor_ca".into(),
        roles: vec!["state_auditor".into()],
        attributes: [("state".to_string(), "CA".to_string())].into(),
    };
    for (name, principal) in [("analyst, masks", &analyst), ("state auditor, row filter", &auditor)] {
        c.bench_function(&format!("policy/table_access+secured_plan ({name})"), |b| {
            b.iter(|| {
                let access =
                    policy.table_access(principal, "rxgate", "health", "prescriber_drug", &columns).unwrap().unwrap();
                let table = TableReference::full("rxgate", "health", "prescriber_drug");
                rxgate_policy::secured_plan(table, source.clone(), &access, &masks, &sql).unwrap()
            })
        });
    }
}

criterion_group!(benches, masks, rewrite);
criterion_main!(benches);
