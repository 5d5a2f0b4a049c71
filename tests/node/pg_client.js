// node-postgres (npm `pg`) against rxgate: SCRAM login, a parameterised query (extended
// protocol), type parsing, a server-side error code. tests/test_clients.py runs it with
// NODE_PATH pointing at the cached install and prints one JSON object.
const { Client } = require('pg');

async function main() {
  const [host, port, user, password] = process.argv.slice(2);
  const client = new Client({ host, port: Number(port), user, password, database: 'rxgate' });
  await client.connect();
  const out = {};
  const count = await client.query(
    'SELECT count(*) AS n FROM health.prescriber_drug WHERE presc_state = $1', ['CA']);
  out.ca = count.rows[0].n;
  const types = await client.query(
    "SELECT 42::int AS i, 2.5::float8 AS f, true AS b, 'x'::text AS t, ARRAY['a','b'] AS arr, " +
    "DATE '2024-01-31' AS d");
  const r = types.rows[0];
  out.types = { i: r.i, f: r.f, b: r.b, t: r.t, arr: r.arr, d: r.d instanceof Date };
  out.fields = types.fields.map((f) => f.dataTypeID);
  try {
    await client.query('SELECT * FROM health.no_such_table');
  } catch (e) {
    out.error = e.code;
  }
  const again = await client.query('SELECT 1::int AS one');
  out.after_error = again.rows[0].one;
  await client.end();
  console.log(JSON.stringify(out));
}

main().catch((e) => { console.error(e); process.exit(1); });
