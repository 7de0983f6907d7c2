// A few DOM helpers: elements built from data, never from HTML strings (terms are text).

/** `h("div.a.b", {attrs}, ...children)`: an element; strings become text nodes. */
export function h(tag, attrs = {}, ...children) {
  const [name, ...classes] = tag.split(".");
  const el = document.createElement(name || "div");
  if (classes.length) el.className = classes.join(" ");
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the contents of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A term as inspect printed it: short ones inline, long ones folded to their first line. */
export function term(text, { fold = 160 } = {}) {
  if (text === null || text === undefined) return h("span.muted", {}, "–");
  if (text.length <= fold && !text.includes("\n")) return h("code.term", {}, text);
  // Folded: the term on one line, cut to `fold` characters; open, as inspect laid it out.
  const line = text.replace(/\s*\n\s*/g, " ");
  const preview = line.length > fold ? line.slice(0, fold) + " …" : line;
  return h("details.term", {}, h("summary", {}, h("code", {}, preview)), h("pre", {}, text));
}

/** A number with thousands separators. */
export const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

/** Bytes in KiB/MiB. */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** The clock part of an ISO time, to the microsecond. */
export const clock = (iso) => (iso ? iso.slice(11, 26) : "–");

/** The link to a process's page. */
export function pidLink(pid, name) {
  if (!pid) return h("span.muted", {}, "–");
  // Only a pid has a page; a reference, port or name is shown as it is.
  if (!/^#PID<\d+\.\d+\.\d+>$/.test(pid)) return h("code.peer", { title: pid }, name ?? pid);
  const short = pid.replace("#PID", "");
  // A name with its pid beside it: two processes may have held the same name.
  return h("a.pid", { href: `#/process/${encodeURIComponent(pid)}`, title: pid }, name ? [name, h("span.pid-of", {}, " " + short)] : short);
}
