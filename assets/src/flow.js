// Message flow: a sequence diagram of the messages among chosen processes, a page at a time.
import { get } from "./api.js";
import { h, fill, term, clock } from "./dom.js";
import { sequenceDiagram } from "./sequence.js";

const PAGE = 100;

export async function flow(root, query = new URLSearchParams()) {
  fill(root, h("h1", {}, "Message flow"), h("p.muted", {}, "Loading…"));
  const [{ processes }, first] = await Promise.all([get("processes"), get("flow", { pids: query.get("pids"), limit: PAGE })]);
  const chosen = new Set(first.lifelines.map((l) => l.pid));
  const picker = h(
    "div.picker",
    { id: "flow-pids" },
    processes.map((p) =>
      h("label", { title: p.pid }, h("input", { type: "checkbox", value: p.pid, checked: chosen.has(p.pid) }), " ", p.name ? `${p.name} ${p.pid.replace("#PID", "")}` : p.pid.replace("#PID", "")),
    ),
  );
  const diagram = h("div.scroll.diagram", {});
  const detail = h("aside.detail", { id: "flow-detail" }, h("p.muted", {}, "Click a message to see it whole."));
  const pager = h("div.pager", {});
  fill(
    root,
    h("h1", {}, "Message flow"),
    h("form.filter", { onsubmit: (ev) => (ev.preventDefault(), show(0, [])) }, picker, h("button", { type: "submit", id: "flow-apply" }, "Draw")),
    pager,
    h("div.split", {}, diagram, detail),
  );

  function pids() {
    return [...picker.querySelectorAll("input:checked")].map((i) => i.value).join(",");
  }

  async function show(after, before, page = null) {
    page = page ?? (await get("flow", { pids: pids(), after_seq: after, limit: PAGE }));
    const next = page.messages.length === PAGE ? page.last_seq : null;
    fill(
      pager,
      h("button", { type: "button", id: "flow-prev", disabled: !before.length, onclick: () => show(before.at(-1), before.slice(0, -1)) }, "← earlier"),
      h("span.muted", { id: "flow-count" }, `${page.messages.length} messages among ${page.lifelines.length} processes`),
      h("button", { type: "button", id: "flow-next", disabled: next === null, onclick: () => show(next, [...before, after]) }, "later →"),
    );
    fill(diagram, sequenceDiagram(page.lifelines, page.messages, { onSelect: select }));
  }

  async function select(m) {
    for (const g of diagram.querySelectorAll("g.msg")) g.classList.toggle("current", Number(g.dataset.seq) === m.seq);
    const { events } = await get("events", { after_seq: m.seq - 1, limit: 1 });
    fill(
      detail,
      h("h2", {}, `#${m.seq} ${m.kind}`),
      h("p", {}, clock(m.time), " · ", m.from, " → ", m.to),
      m.received_seq && m.received_seq !== m.seq ? h("p.muted", {}, `received as #${m.received_seq}`) : null,
      events.length ? term(events[0].data, { fold: 4000 }) : null,
      h("p", {}, h("a", { href: `#/replay/${m.seq}` }, "replay from here")),
    );
  }

  await show(0, [], first);
}
