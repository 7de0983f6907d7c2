// A sequence diagram (SVG) of messages among processes: a lifeline per process, an arrow per
// message in capture order (calls solid, replies dashed, casts with an open head, other
// messages dotted), a loop for a message to itself. Hover shows the message; click selects it.

const NS = "http://www.w3.org/2000/svg";
const COL = 190;
const ROW = 30;
const HEAD = 56;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const short = (text, n) => (text.length > n ? text.slice(0, n - 1) + "…" : text);

/**
 * `lifelines`: [{pid, name}]; `messages`: [{seq, from, to, kind, label, data}] (the API's);
 * `current`: a seq to highlight; `onSelect(message)` on click.
 */
export function sequenceDiagram(lifelines, messages, { current = null, onSelect = () => {}, id = "sequence" } = {}) {
  const index = new Map(lifelines.map((l, i) => [l.pid, i]));
  const x = (pid) => 100 + index.get(pid) * COL;
  const width = 100 + Math.max(lifelines.length - 1, 0) * COL + 140;
  const height = HEAD + (messages.length + 1) * ROW;
  const svg = s("svg", { class: "sequence", id, width, height, viewBox: `0 0 ${width} ${height}` });

  svg.append(
    s(
      "defs",
      {},
      s("marker", { id: "head", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z" })),
      s("marker", { id: "open", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 8, markerHeight: 8, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10", fill: "none", stroke: "context-stroke" })),
    ),
  );

  lifelines.forEach((l) => {
    const cx = x(l.pid);
    svg.append(
      s("line", { x1: cx, y1: HEAD - 8, x2: cx, y2: height, class: "lifeline" }),
      s("rect", { x: cx - 80, y: 6, width: 160, height: 36, rx: 6, class: "actor" }),
      s("text", { x: cx, y: 21, "text-anchor": "middle", class: "actor-name" }, short(l.name ?? l.pid.replace("#PID", ""), 22)),
      s("text", { x: cx, y: 35, "text-anchor": "middle", class: "actor-pid" }, l.name ? l.pid.replace("#PID", "") : ""),
    );
  });

  messages.forEach((m, j) => {
    if (!index.has(m.from) || !index.has(m.to)) return;
    const y = HEAD + (j + 1) * ROW;
    const [x1, x2] = [x(m.from), x(m.to)];
    const g = s("g", { class: `msg ${m.kind}${m.seq === current ? " current" : ""}`, "data-seq": m.seq, "data-from": m.from, "data-to": m.to });
    const marker = m.kind === "cast" ? "url(#open)" : "url(#head)";
    if (x1 === x2) {
      g.append(s("path", { d: `M${x1},${y - 8} h36 v14 h-34`, class: "arrow", "marker-end": marker }));
    } else {
      g.append(s("line", { x1, y1: y, x2: x2 + (x2 > x1 ? -2 : 2), y2: y, class: "arrow", "marker-end": marker }));
    }
    const lx = x1 === x2 ? x1 + 42 : (x1 + x2) / 2;
    g.append(
      s("text", { x: lx, y: y - 5, "text-anchor": x1 === x2 ? "start" : "middle", class: "label" }, `#${m.seq} ${short(m.label, Math.max(18, Math.abs(x2 - x1) / 6.5))}`),
      s("title", {}, `#${m.seq} ${m.kind} ${m.from} → ${m.to}\n${m.label}`),
    );
    // A wide, invisible line makes the arrow easy to hover and click.
    g.append(s("line", { x1: Math.min(x1, x2) - 4, y1: y, x2: Math.max(x1, x2) + 40 * (x1 === x2), y2: y, class: "hit" }));
    g.addEventListener("click", () => onSelect(m));
    svg.append(g);
  });
  return svg;
}
