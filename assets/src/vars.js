// Variables: the tracked calls (use ElixirScope.Track), and for one call its function's source
// with the values recorded beside each line.
import { get } from "./api.js";
import { h, fill, clock, pidLink } from "./dom.js";

export async function vars(root, seq) {
  fill(root, h("h1", {}, "Variables"), h("p.muted", {}, "Loading…"));
  const { calls } = await get("calls");
  const source = h("section", { id: "source" });
  fill(
    root,
    h("h1", {}, "Variables"),
    calls.length
      ? h(
          "div.stack",
          {},
          h(
            "table.list",
            { id: "calls" },
            h("tbody", {}, calls.map((c) => h("tr", { dataset: { seq: c.seq } }, h("td", {}, h("a", { href: `#/vars/${c.seq}` }, `#${c.seq}`)), h("td", {}, h("code", {}, c.mfa)), h("td", {}, pidLink(c.pid)), h("td.time", {}, clock(c.time))))),
          ),
          source,
        )
      : h("p.muted", { id: "calls" }, "No tracked call recorded: annotate functions with use ElixirScope.Track and @scope."),
  );
  const chosen = seq || calls[0]?.seq;
  if (chosen) await showCall(source, chosen);
}

async function showCall(el, seq) {
  const c = await get("call", { seq });
  fill(
    el,
    h("h2", {}, h("code", {}, c.mfa), h("span.muted", {}, ` call #${c.seq} in ${c.pid}`)),
    c.lines
      ? h(
          "table.source",
          { id: "source-lines" },
          h(
            "tbody",
            {},
            c.lines.map((l) =>
              h("tr", { dataset: { line: l.line } }, h("td.num", {}, l.line), h("td", {}, h("pre", {}, l.code)), h("td.values", {}, l.bindings.map((b) => h("span.binding", {}, h("b", {}, b.name), " = ", h("code", {}, b.value))))),
            ),
          ),
        )
      : h("div", {}, h("p.muted", {}, "The source file is not readable here; the recorded bindings:"), h("ul", {}, c.bindings.map((b) => h("li", {}, `line ${b.line}: ${b.name} = ${b.value}`)))),
  );
}
