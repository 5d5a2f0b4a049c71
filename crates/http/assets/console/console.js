// rxgate console: one shell, five pages, data from /console/api/* (each answer computed by the
// logged-in user's engine session, under their policy). Data reaches the page only through
// textContent and DOM attributes, never innerHTML.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let me = null;

  function status(text) {
    $("status").textContent = text || "";
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method && opts.method !== "GET" && me) opts.headers["X-CSRF-Token"] = me.csrf;
    const r = await fetch("/console/api/" + path, opts);
    if (r.status === 401) {
      window.location.assign("/console/login");
      throw new Error("not logged in");
    }
    const body = await r.json().catch(() => ({}));
    body.httpStatus = r.status;
    return body;
  }

  function node(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function clear(e) {
    while (e.firstChild) e.removeChild(e.firstChild);
    return e;
  }

  // The error of a result as a note: "admins only" for what the policy hides.
  function errorNote(result, what) {
    const err = result && result.error;
    if (!err) return null;
    const hidden = err.sqlstate === "42P01" || err.sqlstate === "42501";
    const text = hidden
      ? (what || "This") + " is not visible to you (" + err.sqlstate + "): " + err.message
      : "Error " + err.sqlstate + ": " + err.message;
    return node("p", text, hidden ? "note hidden-by-policy" : "error");
  }

  // A result as a table; `action(row)` may return an element for an extra last column.
  function table(container, result, action, actionTitle) {
    clear(container);
    const note = errorNote(result);
    if (note) {
      container.appendChild(note);
      return;
    }
    const t = node("table", null, "results");
    const head = node("tr");
    for (const c of result.columns) head.appendChild(node("th", c));
    if (action) head.appendChild(node("th", actionTitle || ""));
    t.appendChild(node("thead")).appendChild(head);
    const body = t.appendChild(node("tbody"));
    for (const row of result.rows) {
      const tr = node("tr");
      for (const v of row) tr.appendChild(node("td", v === null ? "NULL" : v, v === null ? "null" : undefined));
      if (action) {
        const td = node("td");
        const a = action(row);
        if (a) td.appendChild(a);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    container.appendChild(t);
    if (result.truncated) container.appendChild(node("p", "(first " + result.rows.length + " rows)", "note"));
  }

  function col(result, name) {
    return result && result.columns ? result.columns.indexOf(name) : -1;
  }

  // ------------------------------------------------------------------ overview
  const SERIES = [
    ["sessions", "Sessions", ""],
    ["statements_per_sec", "Statements per second", ""],
    ["memory_used_bytes", "Memory pool used", "B"],
    ["cache_bytes", "Data cache", "B"],
    ["cache_hits", "Cache hits", ""],
    ["uptime_secs", "Uptime (s)", ""],
  ];

  function parseTs(ts) {
    const s = String(ts);
    return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : s + "Z");
  }

  async function overview() {
    const d = await api("overview");
    const first = (r) => (r && r.rows && r.rows[0] ? r.rows[0][0] : "–");
    $("ov-my-sessions").textContent = d.sessions && d.sessions.error ? "–" : first(d.sessions);
    $("ov-my-queries").textContent = d.queries && d.queries.error ? "–" : first(d.queries);
    const charts = clear($("ov-charts"));
    const note = $("ov-note");
    const h = d.history;
    if (h && h.error) {
      note.hidden = false;
      const hidden = h.error.sqlstate === "42P01" || h.error.sqlstate === "42501";
      note.textContent = hidden
        ? "Uptime, statements per second, memory pool and cache charts are for admins only."
        : "Error " + h.error.sqlstate + ": " + h.error.message;
      return;
    }
    note.hidden = true;
    const ti = col(h, "ts");
    for (const [name, title, unit] of SERIES) {
      const i = col(h, name);
      if (i < 0) continue;
      const card = node("div", null, "card chart-card");
      card.id = "ov-" + name;
      const last = h.rows.length ? h.rows[h.rows.length - 1][i] : null;
      card.appendChild(node("h2", title + ": " + window.RxChart.formatNumber(last, unit)));
      window.RxChart.lineChart(card, {
        title: title + " (last " + d.minutes + " minutes)",
        points: h.rows.map((r) => [parseTs(r[ti]), r[i]]),
        unit: unit,
      });
      charts.appendChild(card);
    }
  }

  // ------------------------------------------------------------------ running queries
  async function queries() {
    const d = await api("queries");
    const r = d.queries;
    const idIdx = ["id", "query_id"].map((n) => col(r, n)).find((i) => i >= 0);
    $("q-count").textContent = r && r.rows ? r.rows.length + " running" : "";
    table($("q-table"), r, (row) => {
      if (idIdx === undefined) return null;
      const b = node("button", "Kill", "kill");
      b.type = "button";
      b.dataset.queryId = String(row[idIdx]);
      b.addEventListener("click", async () => {
        b.disabled = true;
        const res = await api("kill", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ id: String(row[idIdx]) }),
        });
        const err = res.error || (res.result && res.result.error);
        status(err ? "Kill refused: " + err.sqlstate + " " + err.message : "Killed query " + row[idIdx]);
        await queries();
      });
      return b;
    }, "");
  }

  // ------------------------------------------------------------------ history
  async function history() {
    const params = new URLSearchParams();
    for (const id of ["user", "outcome", "text", "minutes"]) {
      const v = $("h-" + id).value.trim();
      if (v) params.set(id, v);
    }
    const d = await api("history?" + params.toString());
    $("h-count").textContent = d.history && d.history.rows ? d.history.rows.length + " statements" : "";
    table($("h-table"), d.history);
  }

  // ------------------------------------------------------------------ catalog
  let catalogData = null;

  async function catalog() {
    catalogData = await api("catalog");
    const tree = clear($("c-tree"));
    const note = errorNote(catalogData.tables, "The catalog");
    if (note) {
      tree.appendChild(note);
      return;
    }
    const bySchema = new Map();
    for (const [schema, name, type] of catalogData.tables.rows) {
      if (!bySchema.has(schema)) bySchema.set(schema, []);
      bySchema.get(schema).push([name, type]);
    }
    for (const [schema, tables] of bySchema) {
      const s = node("div", null, "schema");
      s.appendChild(node("h3", schema));
      const ul = node("ul");
      for (const [name, type] of tables) {
        const li = node("li");
        const b = node("button", name, "table-link");
        b.type = "button";
        b.dataset.table = schema + "." + name;
        b.addEventListener("click", () => tableDetail(schema, name));
        li.appendChild(b);
        if (type && type !== "BASE TABLE") li.appendChild(node("span", " " + type.toLowerCase(), "note"));
        ul.appendChild(li);
      }
      s.appendChild(ul);
      tree.appendChild(s);
    }
  }

  async function tableDetail(schema, name) {
    const detail = clear($("c-detail"));
    detail.appendChild(node("h2", schema + "." + name));
    const c = catalogData.columns;
    const cols = { columns: c.columns ? c.columns.slice(2) : [], rows: [], error: c.error };
    if (c.rows) cols.rows = c.rows.filter((r) => r[0] === schema && r[1] === name).map((r) => r.slice(2));
    detail.appendChild(node("h3", "Columns"));
    const colDiv = detail.appendChild(node("div"));
    colDiv.id = "c-columns";
    table(colDiv, cols);
    const d = await api("table?" + new URLSearchParams({ schema: schema, table: name }).toString());
    for (const [key, title] of [["partitions", "Partitions"], ["snapshots", "Snapshots"]]) {
      detail.appendChild(node("h3", title));
      const div = detail.appendChild(node("div"));
      div.id = "c-" + key;
      if (d.error) div.appendChild(errorNote(d, title));
      else if (d[key] && d[key].error) div.appendChild(errorNote(d[key], title + " of this table"));
      else table(div, d[key]);
    }
  }

  // ------------------------------------------------------------------ reports
  async function reports() {
    const city = await api("reports/city");
    for (const [key, id, label] of [["states", "r-city-states", "state_name"], ["cities", "r-city-cities", "city"]]) {
      const div = clear($(id));
      const r = city[key];
      const note = errorNote(r, "This report");
      if (note) {
        div.appendChild(note);
        continue;
      }
      const li = col(r, label), ci = col(r, "claims"), pi = col(r, "prescribers");
      const labels = r.rows.map((row) => (key === "cities" ? row[li] + ", " + row[col(r, "state_name")] : row[li]));
      div.appendChild(node("p", "Claims", "caption"));
      window.RxChart.barChart(div, { title: "Claims", labels: labels, values: r.rows.map((row) => row[ci]), labelWidth: 230 });
      div.appendChild(node("p", "Prescribers", "caption"));
      window.RxChart.barChart(div, { title: "Prescribers", labels: labels, values: r.rows.map((row) => row[pi]), labelWidth: 230, color: "#c27c0e" });
    }
    await topReport();
  }

  async function topReport(state) {
    const d = await api("reports/top" + (state ? "?" + new URLSearchParams({ state: state }).toString() : ""));
    const select = $("r-state");
    if (!state) {
      clear(select);
      if (d.states && d.states.rows) {
        for (const [s] of d.states.rows) {
          const o = node("option", s);
          o.value = s;
          select.appendChild(o);
        }
      }
      if (d.state) select.value = d.state;
    }
    const div = clear($("r-top"));
    const r = d.top;
    const note = errorNote(r, "The top prescribers report");
    if (note) {
      div.appendChild(note);
      clear($("r-top-table"));
      return;
    }
    const ni = col(r, "npi"), ti = col(r, "trx_cnt");
    window.RxChart.barChart(div, {
      title: "Claims per prescriber",
      labels: r.rows.map((row) => (row[ni] === null ? "NULL" : row[ni])),
      values: r.rows.map((row) => row[ti]),
      labelWidth: 290,
      width: 720,
    });
    table($("r-top-table"), r);
  }

  // ------------------------------------------------------------------ shell
  const PAGES = { overview: overview, queries: queries, history: history, catalog: catalog, reports: reports };

  async function show() {
    const page = (window.location.hash || "#overview").slice(1);
    const name = PAGES[page] ? page : "overview";
    for (const p of Object.keys(PAGES)) {
      $("page-" + p).hidden = p !== name;
      $("nav-" + p).classList.toggle("active", p === name);
    }
    status("");
    document.body.dataset.page = name;
    document.body.dataset.loaded = "";
    try {
      await PAGES[name]();
    } catch (e) {
      status("Could not load this page: " + e.message);
    }
    document.body.dataset.loaded = name;
  }

  async function start() {
    me = await api("me");
    $("who").textContent = me.user + " (" + me.roles.join(", ") + ")";
    $("logout").addEventListener("click", async () => {
      await api("../logout", { method: "POST" }).catch(() => {});
      window.location.assign("/console/login");
    });
    $("q-refresh").addEventListener("click", () => queries());
    $("h-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      history();
    });
    $("r-state").addEventListener("change", () => topReport($("r-state").value));
    window.addEventListener("hashchange", show);
    await show();
  }

  start().catch((e) => status("Could not start: " + e.message));
})();
