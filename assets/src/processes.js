// The processes list and a process's page: counts, timeline (paged by seq), state history with
// the diff from each state to the next, a chart of numeric state fields, messages by tag.
import { get } from "./api.js";
import { h, fill, num, term, clock, pidLink } from "./dom.js";
import { eventTable } from "./events.js";
import { lineChart } from "./chart.js";

export async function processes(root) {
  fill(root, h("h1", {}, "Processes"), h("p.muted", {}, "Loading…"));
  const { processes, total } = await get("processes");
  fill(
    root,
    h("h1", {}, "Processes"),
    h("p.muted", { id: "processes-count" }, processes.length < total ? `the ${processes.length} busiest of ${total} processes with events` : `${total} processes with events`),
    h(
      "table.list",
      { id: "processes" },
      h("thead", {}, h("tr", {}, h("th", {}, "process"), h("th", {}, "name"), h("th.num", {}, "events"), h("th", {}, "alive"), h("th.num", {}, "mailbox"))),
      h(
        "tbody",
        {},
        processes.map((p) =>
          h(
            "tr",
            { dataset: { pid: p.pid } },
            h("td", {}, pidLink(p.pid)),
            h("td", {}, p.name ?? ""),
            h("td.num", {}, num(p.events)),
            h("td", {}, p.alive ? "yes" : "no"),
            h("td.num", {}, p.mailbox ?? "–"),
          ),
        ),
      ),
    ),
  );
}

const PAGE = 50;

export async function process(root, pid) {
  fill(root, h("h1", {}, pid), h("p.muted", {}, "Loading…"));
  const p = await get("process", { pid });
  const tabs = h("nav.tabs", {});
  const body = h("section", { id: "tab" });
  const show = {
    timeline: () => timeline(body, pid),
    states: () => states(body, pid),
    messages: () => messages(body, p),
  };
  for (const name of Object.keys(show)) {
    tabs.append(h("button", { type: "button", id: `tab-${name}`, onclick: () => select(name) }, name));
  }
  function select(name) {
    for (const b of tabs.children) b.classList.toggle("on", b.id === `tab-${name}`);
    show[name]().catch((e) => fill(body, h("div.error", {}, e.message)));
  }
  const kinds = Object.entries(p.by_kind).sort((a, b) => b[1] - a[1]);
  fill(
    root,
    h("h1", {}, p.name ? `${p.name} ` : "", h("span.muted", {}, p.pid)),
    h(
      "p",
      { id: "process-summary" },
      p.alive ? `alive, mailbox ${p.mailbox}` : "not alive (or not on this node)",
      " · ",
      kinds.map(([k, n]) => `${n} ${k}`).join(", "),
    ),
    tabs,
    body,
  );
  select("timeline");
}

async function timeline(el, pid, after = 0, before = []) {
  const page = await get("timeline", { pid, after_seq: after, limit: PAGE });
  const next = page.events.length === PAGE ? page.last_seq : null;
  fill(
    el,
    h(
      "div.pager",
      {},
      h("button", { type: "button", id: "prev", disabled: before.length === 0, onclick: () => timeline(el, pid, before.at(-1), before.slice(0, -1)) }, "← earlier"),
      h("span.muted", {}, page.events.length ? `seq ${page.first_seq} … ${page.last_seq}` : "no events"),
      h("button", { type: "button", id: "next", disabled: next === null, onclick: () => timeline(el, pid, next, [...before, after]) }, "later →"),
    ),
    h("div.scroll", {}, eventTable(page.events, { id: "timeline" })),
  );
}

async function states(el, pid) {
  const { states } = await get("states", { pid, limit: 1000 });
  const points = states.map((s) => ({ x: s.seq, values: s.numbers }));
  fill(
    el,
    h("h2", {}, "Numeric fields over time"),
    lineChart(points, { id: "state-chart" }),
    h("h2", {}, `States (${states.length})`),
    h("ol.states", { id: "states" }, states.map(stateItem)),
  );
}

function stateItem(s) {
  const d = s.diff;
  const changes = d
    ? [
        ...d.changed.map((c) => h("li.changed", {}, h("code", {}, c.path || "(whole)"), " ", h("code.before", {}, c.before), " → ", h("code.after", {}, c.after))),
        ...d.added.map((c) => h("li.added", {}, "+ ", h("code", {}, c.path), " ", h("code.after", {}, c.value))),
        ...d.removed.map((c) => h("li.removed", {}, "− ", h("code", {}, c.path), " ", h("code.before", {}, c.value))),
      ]
    : [];
  return h(
    "li.state",
    { dataset: { seq: s.seq } },
    h("div.head", {}, h("span.num", {}, `#${s.seq}`), " ", clock(s.time), " ", h("span.mfa", {}, s.callback ?? "")),
    d ? (d.equal ? h("div.muted", {}, "unchanged") : h("ul.diff", {}, changes)) : h("div.muted", {}, "first state"),
    term(s.state),
  );
}

async function messages(el, p) {
  const max = Math.max(1, ...p.received_by_tag.map((t) => t.count));
  fill(
    el,
    h("h2", {}, "Messages received, by tag"),
    p.received_by_tag.length
      ? h(
          "table.list",
          { id: "tags" },
          h("tbody", {}, p.received_by_tag.map((t) => h("tr", {}, h("td", {}, h("code", {}, t.tag)), h("td.num", {}, num(t.count)), h("td.bar", {}, h("i", { style: `width:${(100 * t.count) / max}%` }))))),
        )
      : h("p.muted", {}, "No messages received."),
  );
}
