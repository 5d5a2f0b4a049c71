use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iceberg::io::FileIOBuilder;
use object_store::ObjectStoreExt;
use url::Url;

use super::*;

fn opts() -> StorageOptions {
    StorageOptions::default()
}

#[test]
fn locations_split_into_store_root_and_decoded_object_name() {
    let l =
        parse_location("gs://bkt/wh/health/t/data/delivery_date=2021-01-01/presc_state=CA/f.parquet", &opts()).unwrap();
    assert_eq!(l.root.as_str(), "gs://bkt");
    assert_eq!(l.path.as_ref(), "wh/health/t/data/delivery_date=2021-01-01/presc_state=CA/f.parquet");
    // A percent-encoded location names the decoded object: never a literal %3D.
    let l = parse_location("gs://bkt/a/delivery_date%3D2021-01-01/x", &opts()).unwrap();
    assert_eq!(l.path.as_ref(), "a/delivery_date=2021-01-01/x");

    for (loc, root) in [
        ("s3://b1/x/y.csv", "s3://b1"),
        ("s3a://b1/x", "s3://b1"),
        ("gcs://b2/x", "gs://b2"),
        ("hdfs://nn.example:8020/warehouse/t", "hdfs://nn.example:8020"),
        ("file:///tmp/wh/x", "file:///"),
        ("/tmp/wh/x", "file:///"),
        ("memory://wh/x", "memory:///"),
    ] {
        assert_eq!(parse_location(loc, &opts()).unwrap().root.as_str(), root, "{loc}");
    }
    assert_eq!(parse_location("/tmp/wh/x", &opts()).unwrap().path.as_ref(), "tmp/wh/x");
    assert_eq!(parse_location("memory://wh/x", &opts()).unwrap().path.as_ref(), "wh/x");

    // hdfs:///path needs a configured namenode.
    let e = parse_location("hdfs:///warehouse", &opts()).unwrap_err();
    assert_eq!(e.code, StatusCode::InvalidArgument);
    assert!(e.message.contains("namenode"), "{}", e.message);
    let mut with_nn = opts();
    with_nn.hdfs.namenode = Some("hdfs://nn:9000".into());
    let l = parse_location("hdfs:///warehouse/t", &with_nn).unwrap();
    assert_eq!((l.root.as_str(), l.path.as_ref()), ("hdfs://nn:9000", "warehouse/t"));

    let e = parse_location("ftp://host/x", &opts()).unwrap_err();
    assert_eq!(e.code, StatusCode::Unsupported);
    assert_eq!(parse_location("gs:///x", &opts()).unwrap_err().code, StatusCode::InvalidArgument);
}

#[test]
fn debug_output_hides_s3_secrets() {
    let mut o = opts();
    o.s3.access_key_id = Some("AKIAEXAMPLE".into());
    o.s3.secret_access_key = Some("very-secret".into());
    o.s3.session_token = Some("token-secret".into());
    let text = format!("{o:?}");
    assert!(text.contains("AKIAEXAMPLE") && text.contains("<hidden>"), "{text}");
    assert!(!text.contains("very-secret") && !text.contains("token-secret"), "{text}");
}

#[tokio::test]
async fn requests_are_counted_by_operation_and_kind() {
    let reg = StoreRegistry::new(opts());
    reg.write("memory://wh/t/metadata/00001-a.metadata.json", Bytes::from_static(b"{}")).await.unwrap();
    reg.write("memory://wh/t/data/p=1/f.parquet", Bytes::from(vec![7u8; 1000])).await.unwrap();
    reg.write("memory://wh/t/data/p=1/g.parquet", Bytes::from(vec![7u8; 10])).await.unwrap();
    assert_eq!(reg.read("memory://wh/t/metadata/00001-a.metadata.json").await.unwrap(), Bytes::from_static(b"{}"));
    let (store, path) = reg.resolve("memory://wh/t/data/p=1/f.parquet").unwrap();
    assert_eq!(store.get_range(&path, 990..1000).await.unwrap().len(), 10);
    assert_eq!(store.get_range(&path, 0..100).await.unwrap().len(), 100);
    assert_eq!(store.head(&path).await.unwrap().size, 1000);
    let files = reg.list_files("memory://wh/t/data/p=1", "PARQUET").await.unwrap();
    assert_eq!(files, vec!["memory://wh/t/data/p=1/f.parquet", "memory://wh/t/data/p=1/g.parquet"]);

    let c = store.counters();
    assert_eq!(c.requests(Operation::Put, ObjectKind::Metadata), 1);
    assert_eq!(c.requests(Operation::Put, ObjectKind::Parquet), 2);
    assert_eq!(c.requests(Operation::Get, ObjectKind::Metadata), 1);
    assert_eq!(c.requests(Operation::GetTail, ObjectKind::Parquet), 1, "a range ending at the end is a tail read");
    assert_eq!(c.requests(Operation::GetRange, ObjectKind::Parquet), 1);
    // head of f.parquet by the test, head of the directory by list_files (not an object).
    assert_eq!(c.requests(Operation::Head, ObjectKind::Parquet), 1);
    assert_eq!(c.requests(Operation::Head, ObjectKind::Other), 1);
    assert_eq!(c.requests(Operation::List, ObjectKind::Other), 1);
    let rows = reg.request_counts();
    let tail = rows.iter().find(|r| r.operation == Operation::GetTail).unwrap();
    assert_eq!((tail.store.as_str(), tail.requests, tail.bytes), ("memory://", 1, 10));
    let range = rows.iter().find(|r| r.operation == Operation::GetRange).unwrap();
    assert_eq!((range.requests, range.bytes), (1, 100));
    let put = rows.iter().find(|r| r.operation == Operation::Put && r.kind == ObjectKind::Parquet).unwrap();
    assert_eq!(put.bytes, 1010);
    assert_eq!(reg.total_requests(), 9);
}

#[tokio::test]
async fn iceberg_file_io_writes_whole_objects_below_the_threshold_and_multipart_above() {
    let mut o = opts();
    o.multipart_threshold = Some(100);
    let reg = Arc::new(StoreRegistry::new(o));
    let io = FileIOBuilder::new(Arc::new(ObjectStorageFactory::new(reg.clone()))).build();

    let small = io.new_output("memory://wh/small.avro").unwrap();
    let mut w = small.writer().await.unwrap();
    w.write(Bytes::from(vec![1u8; 60])).await.unwrap();
    w.close().await.unwrap();
    let big = io.new_output("memory://wh/big.parquet").unwrap();
    let mut w = big.writer().await.unwrap();
    for _ in 0..5 {
        w.write(Bytes::from(vec![2u8; 60])).await.unwrap();
    }
    w.close().await.unwrap();

    assert!(io.exists("memory://wh/small.avro").await.unwrap());
    assert!(!io.exists("memory://wh/missing.avro").await.unwrap());
    let input = io.new_input("memory://wh/big.parquet").unwrap();
    assert_eq!(input.metadata().await.unwrap().size, 300);
    assert_eq!(input.reader().await.unwrap().read(200..210).await.unwrap(), Bytes::from(vec![2u8; 10]));
    assert_eq!(io.new_input("memory://wh/small.avro").unwrap().read().await.unwrap().len(), 60);

    let (store, _) = reg.resolve("memory://wh/x").unwrap();
    let c = store.counters();
    assert_eq!(c.requests(Operation::Put, ObjectKind::Manifest), 1);
    assert_eq!(c.requests(Operation::PutMultipart, ObjectKind::Manifest), 0);
    assert_eq!(c.requests(Operation::Put, ObjectKind::Parquet), 0);
    assert_eq!(c.requests(Operation::PutMultipart, ObjectKind::Parquet), 1);
    assert!(c.requests(Operation::PutPart, ObjectKind::Parquet) >= 2);

    io.delete_prefix("memory://wh").await.unwrap();
    assert!(!io.exists("memory://wh/big.parquet").await.unwrap());
}

#[tokio::test]
async fn local_paths_and_file_urls_reach_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let reg = StoreRegistry::new(opts());
    let plain = dir.path().join("raw/cities/a=1.parquet");
    reg.write(plain.to_str().unwrap(), Bytes::from_static(b"PAR1")).await.unwrap();
    assert!(plain.is_file(), "object name kept its '='");
    let url = format!("file://{}", dir.path().join("raw/cities").display());
    assert_eq!(reg.list_files(&url, "parquet").await.unwrap(), vec![format!("{url}/a=1.parquet")]);
    let e = reg.read(dir.path().join("nope.csv").to_str().unwrap()).await.unwrap_err();
    assert_eq!(e.code, StatusCode::InputUnavailable);
}

#[tokio::test]
async fn datafusion_resolves_urls_through_the_registry() {
    let reg = Arc::new(StoreRegistry::new(opts()));
    let df = reg.datafusion();
    let url = Url::parse("memory://anything/x").unwrap();
    let store = df.get_store(&url).unwrap();
    store.put(&object_store::path::Path::from("k"), Bytes::from_static(b"v").into()).await.unwrap();
    assert_eq!(reg.read("memory://k").await.unwrap(), Bytes::from_static(b"v"));
    assert!(reg.total_requests() >= 2, "DataFusion's requests are counted too");
}

#[tokio::test]
async fn an_unreachable_hdfs_namenode_is_a_clear_storage_error() {
    // No HDFS server can be had on these machines: this is as far as the hdfs:// path goes.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let reg = StoreRegistry::new(opts());
    let loc = format!("hdfs://127.0.0.1:{port}/warehouse/t/metadata/v1.metadata.json");
    let res = tokio::time::timeout(Duration::from_secs(60), reg.read(&loc)).await.expect("hdfs error within 60 s");
    let e = res.unwrap_err();
    assert_eq!(e.code, StatusCode::StorageUnavailable, "{}", e.message);
    assert!(e.message.starts_with(&loc), "{}", e.message);
    assert!(!e.message.contains('\n'));
}
