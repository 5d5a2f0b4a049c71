// rxgate console charts: small line and bar charts as inline SVG, built with DOM calls only
// (no innerHTML, so data is never parsed as markup). Pure helpers are exported for the unit
// tests (tests/console/chart.test.js, run with `node --test`).
"use strict";
(function (root) {
  const SVG = "http://www.w3.org/2000/svg";

  // A number rounded up to 1, 2 or 5 times a power of ten (a readable axis maximum).
  function niceMax(v) {
    if (!(v > 0) || !isFinite(v)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // Maps [d0, d1] linearly onto [r0, r1]; a zero-width domain maps to r0.
  function scale(d0, d1, r0, r1) {
    const w = d1 - d0;
    return (v) => (w === 0 ? r0 : r0 + ((v - d0) / w) * (r1 - r0));
  }

  // Short text for a number: 1234 -> "1.2k", 3.5e9 -> "3.5G"; bytes with unit "B".
  function formatNumber(v, unit) {
    if (v === null || v === undefined || v === "") return "–";
    const n = Number(v);
    if (!isFinite(n)) return String(v);
    const a = Math.abs(n);
    const suffixes = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (const [d, s] of suffixes) {
      if (a >= d) return (n / d).toFixed(a / d >= 100 ? 0 : 1) + s + (unit || "");
    }
    return (Number.isInteger(n) ? String(n) : n.toFixed(a >= 10 ? 1 : 2)) + (unit || "");
  }

  // The SVG path ("M x y L x y …") of points [[x, y], …] under the scales.
  function linePath(points, sx, sy) {
    return points
      .filter((p) => p[1] !== null && p[1] !== undefined && isFinite(Number(p[1])))
      .map((p, i) => (i === 0 ? "M" : "L") + sx(p[0]).toFixed(1) + " " + sy(Number(p[1])).toFixed(1))
      .join(" ");
  }

  function el(doc, name, attrs, text) {
    const e = doc.createElementNS(SVG, name);
    for (const k of Object.keys(attrs || {})) e.setAttribute(k, String(attrs[k]));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  // A line chart of points [[x (ms), y], …] into `container`; returns the <svg>.
  function lineChart(container, opts) {
    const doc = container.ownerDocument;
    const w = opts.width || 320, h = opts.height || 120, left = 44, bottom = 18, top = 8;
    const pts = opts.points || [];
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => Number(p[1])).filter((v) => isFinite(v));
    const ymax = niceMax(Math.max(0, ...ys));
    const sx = scale(Math.min(...xs), Math.max(...xs), left, w - 4);
    const sy = scale(0, ymax, h - bottom, top);
    const svg = el(doc, "svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "chart-line", role: "img" });
    svg.appendChild(el(doc, "title", {}, opts.title || ""));
    svg.appendChild(el(doc, "line", { x1: left, y1: h - bottom, x2: w - 4, y2: h - bottom, stroke: "#999" }));
    svg.appendChild(el(doc, "line", { x1: left, y1: top, x2: left, y2: h - bottom, stroke: "#999" }));
    svg.appendChild(el(doc, "text", { x: left - 4, y: top + 8, "text-anchor": "end", class: "axis" }, formatNumber(ymax, opts.unit)));
    svg.appendChild(el(doc, "text", { x: left - 4, y: h - bottom, "text-anchor": "end", class: "axis" }, "0"));
    if (pts.length) {
      const label = (t) => new Date(t).toISOString().slice(11, 16);
      svg.appendChild(el(doc, "text", { x: left, y: h - 4, class: "axis" }, label(Math.min(...xs))));
      svg.appendChild(el(doc, "text", { x: w - 4, y: h - 4, "text-anchor": "end", class: "axis" }, label(Math.max(...xs))));
      svg.appendChild(el(doc, "path", { d: linePath(pts, sx, sy), fill: "none", stroke: opts.color || "#2a6fb0", "stroke-width": 1.5, class: "series" }));
    } else {
      svg.appendChild(el(doc, "text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "axis" }, "no samples yet"));
    }
    container.appendChild(svg);
    return svg;
  }

  // A horizontal bar chart of labels and values into `container`; returns the <svg>. Each bar's
  // label is a <text class="bar-label"> with the full text.
  function barChart(container, opts) {
    const doc = container.ownerDocument;
    const labels = opts.labels || [], values = (opts.values || []).map((v) => (v === null ? null : Number(v)));
    const labelW = opts.labelWidth || 180, w = opts.width || 640, row = 18, top = 4;
    const h = top + row * Math.max(labels.length, 1) + 4;
    const vmax = niceMax(Math.max(0, ...values.filter((v) => v !== null && isFinite(v))));
    const sx = scale(0, vmax, labelW, w - 70);
    const svg = el(doc, "svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, class: "chart-bar", role: "img" });
    svg.appendChild(el(doc, "title", {}, opts.title || ""));
    labels.forEach((label, i) => {
      const y = top + i * row;
      const v = values[i];
      svg.appendChild(el(doc, "text", { x: labelW - 6, y: y + 13, "text-anchor": "end", class: "bar-label" }, label));
      if (v === null || !isFinite(v)) {
        svg.appendChild(el(doc, "text", { x: labelW + 4, y: y + 13, class: "bar-value suppressed" }, "suppressed"));
        return;
      }
      svg.appendChild(el(doc, "rect", { x: labelW, y: y + 3, width: Math.max(1, sx(v) - labelW).toFixed(1), height: row - 6, fill: opts.color || "#2a6fb0", class: "bar" }));
      svg.appendChild(el(doc, "text", { x: sx(v) + 4, y: y + 13, class: "bar-value" }, formatNumber(v)));
    });
    container.appendChild(svg);
    return svg;
  }

  const RxChart = { niceMax, scale, formatNumber, linePath, lineChart, barChart };
  if (typeof module !== "undefined" && module.exports) module.exports = RxChart;
  else root.RxChart = RxChart;
})(this);
