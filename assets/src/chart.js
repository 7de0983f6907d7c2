// A small SVG line chart of numeric series over seq: one line per series, axes with the range.
import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** `points`: [{x, values: {name: number}}]; a chart of every name's values against x. */
export function lineChart(points, { width = 720, height = 220, id } = {}) {
  const names = [...new Set(points.flatMap((p) => Object.keys(p.values)))].slice(0, COLORS.length);
  if (!names.length || points.length < 1) return h("p.muted", { id }, "No numeric fields in these states.");
  const xs = points.map((p) => p.x);
  const ys = points.flatMap((p) => names.map((n) => p.values[n]).filter((v) => typeof v === "number"));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y0 === y1) [y0, y1] = [y0 - 1, y1 + 1];
  const pad = { l: 56, r: 12, t: 12, b: 28 };
  const X = (x) => pad.l + ((x - x0) / (x1 - x0 || 1)) * (width - pad.l - pad.r);
  const Y = (y) => height - pad.b - ((y - y0) / (y1 - y0)) * (height - pad.t - pad.b);
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", width, height, id });
  svg.append(
    s("line", { x1: pad.l, y1: height - pad.b, x2: width - pad.r, y2: height - pad.b, class: "axis" }),
    s("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: height - pad.b, class: "axis" }),
    s("text", { x: pad.l - 6, y: Y(y1) + 4, "text-anchor": "end" }, fmt(y1)),
    s("text", { x: pad.l - 6, y: Y(y0) + 4, "text-anchor": "end" }, fmt(y0)),
    s("text", { x: pad.l, y: height - 8 }, `seq ${x0}`),
    s("text", { x: width - pad.r, y: height - 8, "text-anchor": "end" }, `seq ${x1}`),
  );
  names.forEach((name, i) => {
    const pts = points.filter((p) => typeof p.values[name] === "number");
    // A step line: a state holds until the next one.
    let d = "";
    pts.forEach((p, j) => {
      const x = X(p.x), y = Y(p.values[name]);
      d += j === 0 ? `M${x},${y}` : `H${x}V${y}`;
    });
    svg.append(s("path", { d, stroke: COLORS[i], class: "series", "data-series": name }));
    for (const p of pts) svg.append(s("circle", { cx: X(p.x), cy: Y(p.values[name]), r: 2.5, fill: COLORS[i] }, s("title", {}, `${name} = ${p.values[name]} at seq ${p.x}`)));
  });
  const legend = h("div.legend", {}, names.map((n, i) => h("span", {}, h("i", { style: `background:${COLORS[i]}` }), n)));
  return h("div.chart-box", {}, svg, legend);
}

const fmt = (v) => (Math.abs(v) >= 1e6 ? v.toExponential(2) : Number.isInteger(v) ? String(v) : v.toFixed(2));
