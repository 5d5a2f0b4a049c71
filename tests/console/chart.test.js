// Unit tests of the console's chart helpers (crates/http/assets/console/chart.js), with a
// minimal stand-in for the DOM. Run: node --test tests/console/ (tests/test_console.py does).
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const path = require("node:path");
const RxChart = require(path.join(__dirname, "../../crates/http/assets/console/chart.js"));

// Just enough of a DOM for the charts: elements with attributes, children and text.
function fakeDocument() {
  const doc = {
    createElementNS(ns, name) {
      return {
        ns, name, attrs: {}, children: [], textContent: "", ownerDocument: doc,
        setAttribute(k, v) { this.attrs[k] = v; },
        appendChild(c) { this.children.push(c); return c; },
      };
    },
  };
  return doc;
}

function all(node, name, out = []) {
  if (node.name === name) out.push(node);
  for (const c of node.children || []) all(c, name, out);
  return out;
}

test("niceMax rounds up to 1, 2 or 5 times a power of ten", () => {
  assert.strictEqual(RxChart.niceMax(0), 1);
  assert.strictEqual(RxChart.niceMax(7), 10);
  assert.strictEqual(RxChart.niceMax(13), 20);
  assert.strictEqual(RxChart.niceMax(420), 500);
  assert.strictEqual(RxChart.niceMax(1000), 1000);
  assert.strictEqual(RxChart.niceMax(NaN), 1);
});

test("scale maps a domain onto a range", () => {
  const s = RxChart.scale(0, 10, 100, 0);
  assert.strictEqual(s(0), 100);
  assert.strictEqual(s(5), 50);
  assert.strictEqual(RxChart.scale(3, 3, 7, 9)(3), 7);
});

test("formatNumber is short", () => {
  assert.strictEqual(RxChart.formatNumber(1234), "1.2k");
  assert.strictEqual(RxChart.formatNumber(3.5e9, "B"), "3.5GB");
  assert.strictEqual(RxChart.formatNumber(12), "12");
  assert.strictEqual(RxChart.formatNumber(null), "–");
  assert.strictEqual(RxChart.formatNumber("k1:abc"), "k1:abc");
});

test("linePath skips missing values", () => {
  const id = (v) => v;
  assert.strictEqual(RxChart.linePath([[0, 1], [1, null], [2, 3]], id, id), "M0.0 1.0 L2.0 3.0");
});

test("lineChart draws a path, axes and a title", () => {
  const doc = fakeDocument();
  const box = doc.createElementNS("html", "div");
  const svg = RxChart.lineChart(box, { title: "Sessions", points: [[0, 1], [60000, 3], [120000, 2]] });
  assert.strictEqual(box.children[0], svg);
  assert.strictEqual(all(svg, "path").length, 1);
  assert.match(all(svg, "path")[0].attrs.d, /^M\S+ \S+ L/);
  assert.strictEqual(all(svg, "title")[0].textContent, "Sessions");
});

test("barChart labels bars with the full text and marks suppressed values", () => {
  const doc = fakeDocument();
  const box = doc.createElementNS("html", "div");
  const labels = ["k1:0123456789abcdef0123456789abcdef", "<b>not markup</b>", "x"];
  const svg = RxChart.barChart(box, { labels, values: [30, 10, null] });
  const texts = all(svg, "text").filter((t) => t.attrs.class === "bar-label").map((t) => t.textContent);
  assert.deepStrictEqual(texts, labels);
  assert.strictEqual(all(svg, "rect").length, 2);
  assert.ok(all(svg, "text").some((t) => t.textContent === "suppressed"));
  const widths = all(svg, "rect").map((r) => Number(r.attrs.width));
  assert.ok(widths[0] > widths[1]);
});
