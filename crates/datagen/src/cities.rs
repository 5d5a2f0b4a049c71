//! Writes the city dimension as Parquet in the simplemaps layout.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::data::City;
use crate::DatagenError;

/// Arrow schema of `us_cities.parquet` (column names and order of simplemaps' file).
pub fn cities_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("city_ascii", DataType::Utf8, false),
        Field::new("state_id", DataType::Utf8, false),
        Field::new("state_name", DataType::Utf8, false),
        Field::new("county_fips", DataType::Utf8, true),
        Field::new("county_name", DataType::Utf8, true),
        Field::new("lat", DataType::Float64, false),
        Field::new("lng", DataType::Float64, false),
        Field::new("population", DataType::Int64, false),
        Field::new("density", DataType::Float64, true),
        Field::new("source", DataType::Utf8, false),
        Field::new("military", DataType::Boolean, true),
        Field::new("incorporated", DataType::Boolean, true),
        Field::new("timezone", DataType::Utf8, false),
        Field::new("ranking", DataType::Int32, true),
        Field::new("zips", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
    ]))
}

/// Builds one record batch holding all cities.
pub fn cities_batch(cities: &[City]) -> Result<RecordBatch, DatagenError> {
    fn s<'a>(cities: &'a [City], f: impl Fn(&'a City) -> &'a str) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(cities.iter().map(f)))
    }
    fn os<'a>(cities: &'a [City], f: impl Fn(&'a City) -> Option<&'a str>) -> ArrayRef {
        Arc::new(cities.iter().map(f).collect::<StringArray>())
    }
    let cols: Vec<ArrayRef> = vec![
        s(cities, |c| &c.city),
        s(cities, |c| &c.city_ascii),
        s(cities, |c| &c.state_id),
        s(cities, |c| &c.state_name),
        os(cities, |c| c.county_fips.as_deref()),
        os(cities, |c| c.county_name.as_deref()),
        Arc::new(Float64Array::from_iter_values(cities.iter().map(|c| c.lat))),
        Arc::new(Float64Array::from_iter_values(cities.iter().map(|c| c.lng))),
        Arc::new(Int64Array::from_iter_values(cities.iter().map(|c| c.population))),
        Arc::new(cities.iter().map(|c| c.density).collect::<Float64Array>()),
        s(cities, |c| &c.source),
        Arc::new(cities.iter().map(|c| c.military).collect::<BooleanArray>()),
        Arc::new(cities.iter().map(|c| c.incorporated).collect::<BooleanArray>()),
        s(cities, |c| &c.timezone),
        Arc::new(cities.iter().map(|c| c.ranking).collect::<Int32Array>()),
        s(cities, |c| &c.zips),
        Arc::new(Int64Array::from_iter_values(cities.iter().map(|c| c.id))),
    ];
    Ok(RecordBatch::try_new(cities_schema(), cols)?)
}

/// Writes all cities to `path` (Snappy-compressed Parquet, one row group).
pub fn write_cities_parquet(cities: &[City], path: &Path) -> Result<(), DatagenError> {
    let batch = cities_batch(cities)?;
    let file = File::create(path).map_err(|e| DatagenError::io(path, e))?;
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}
