// The supervision tree at a point of the capture, with a slider to travel; children started,
// restarted or terminated between a second point and this one are marked.
import { get } from "./api.js";
import { h, fill, pidLink } from "./dom.js";

export async function tree(root, query = new URLSearchParams()) {
  fill(root, h("h1", {}, "Supervision tree"), h("p.muted", {}, "Loading…"));
  let data = await get("tree", { at: query.get("at"), from: query.get("from") ?? 1 });
  const at = h("input", { type: "range", id: "tree-at", min: data.first_seq, max: data.last_seq, value: data.at });
  const from = h("input", { type: "range", id: "tree-from", min: data.first_seq, max: data.last_seq, value: data.from ?? data.first_seq });
  const atLabel = h("span.num", { id: "tree-at-label" });
  const fromLabel = h("span.num", { id: "tree-from-label" });
  const body = h("section", { id: "tree" });
  const changes = h("section", { id: "tree-changes" });
  fill(
    root,
    h("h1", {}, "Supervision tree"),
    h("div.sliders", {}, h("label", {}, "at seq ", atLabel, at), h("label", {}, "changes since seq ", fromLabel, from)),
    body,
    h("h2", {}, "Changes in the window"),
    changes,
  );

  let pending = null;
  let asked = 0;
  const reload = () => {
    clearTimeout(pending);
    atLabel.textContent = at.value;
    fromLabel.textContent = from.value;
    const mine = ++asked;
    pending = setTimeout(async () => {
      try {
        const answer = await get("tree", { at: at.value, from: from.value });
        if (mine !== asked) return; // a later move of a slider is on its way
        data = answer;
        render();
      } catch (e) {
        fill(body, h("div.error", {}, e.message));
      }
    }, 120);
  };
  at.addEventListener("input", reload);
  from.addEventListener("input", reload);

  function render() {
    atLabel.textContent = data.at;
    fromLabel.textContent = data.from;
    const marks = new Map();
    for (const c of data.changes) if (c.pid) marks.set(c.pid, c);
    fill(body, data.roots.length ? h("ul.tree", {}, data.roots.map((n) => node(n, marks))) : h("p.muted", {}, "No traced supervisor was alive then."));
    fill(
      changes,
      data.changes.length
        ? h(
            "table.list",
            { id: "changes" },
            h("tbody", {}, data.changes.map((c) => h("tr", { dataset: { seq: c.seq } }, h("td.num", {}, `#${c.seq}`), h(`td.action.a-${c.action}`, {}, c.action), h("td", {}, h("code", {}, c.id)), h("td", {}, c.old_pid ? pidLink(c.old_pid) : "", c.old_pid && c.pid ? " → " : "", c.pid ? pidLink(c.pid) : ""), h("td", {}, c.reason ? h("code", {}, c.reason) : "")))),
          )
        : h("p.muted", {}, "No child started, restarted or terminated between the two points."),
    );
  }
  render();
}

function node(n, marks) {
  const mark = marks.get(n.pid);
  return h(
    "li",
    {},
    h(
      `div.node.${n.type}${mark ? ".changed.a-" + mark.action : ""}`,
      { dataset: { pid: n.pid } },
      h("a", { href: `#/process/${encodeURIComponent(n.pid)}` }, n.name ?? n.id ?? n.pid),
      h("div.node-pid", {}, n.pid.replace("#PID", "")),
      h("div.node-type", {}, n.type, mark ? ` · ${mark.action} at #${mark.seq}` : ""),
    ),
    n.children && n.children.length ? h("ul", {}, n.children.map((c) => node(c, marks))) : null,
  );
}
