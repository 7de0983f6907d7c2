// Replay: the ElixirScope.Replay cursor in the browser. Step with the buttons or the keyboard
// (← → step, Home/End, g to jump), jump to a seq, or step until a pattern; each step shows the
// event, the involved processes' states (the change highlighted), pending messages and open
// calls, and the current message on a sequence diagram of its neighbourhood.
import { get } from "./api.js";
import { h, fill, term, clock, pidLink } from "./dom.js";
import { sequenceDiagram } from "./sequence.js";

export function replay(root, seq) {
  let current = null;
  const event = h("section.event", { id: "replay-event" });
  const procs = h("section.procs", { id: "replay-processes" });
  const diagram = h("div.scroll.diagram", { id: "replay-diagram" });
  const error = h("div.error", { id: "replay-error", hidden: true });
  const jump = h("input", { id: "replay-seq", size: 16, placeholder: "seq or HH:MM:SS.ffffff" });
  const pattern = h("input", { id: "replay-pattern", size: 30, placeholder: "{:work, :poison}" });
  const key = h("select", { id: "replay-key" }, ["message", "args", "result", "state", "data"].map((k) => h("option", { value: k }, k + ":")));
  const button = (id, label, title, fn) => h("button", { type: "button", id, title, onclick: fn }, label);

  fill(
    root,
    h("h1", {}, "Replay"),
    h(
      "div.toolbar",
      {},
      button("replay-start", "« first", "first event (Home)", () => go("start")),
      button("replay-prev", "◀ back", "previous event (←)", () => go("prev")),
      button("replay-next", "step ▶", "next event (→)", () => go("next")),
      button("replay-end", "last »", "last event (End)", () => go("end")),
      h("form.inline", { onsubmit: (ev) => (ev.preventDefault(), go("here", jump.value)) }, jump, h("button", { type: "submit", id: "replay-jump" }, "Jump")),
      h("form.inline", { onsubmit: (ev) => (ev.preventDefault(), go("until")) }, key, pattern, h("button", { type: "submit", id: "replay-until" }, "Step until")),
    ),
    error,
    event,
    h("div.split", {}, procs, diagram),
  );

  // `at`: a seq, or a time of day (UTC, the current event's date) or a whole ISO 8601 time.
  function where(at) {
    const text = String(at ?? "").trim();
    if (!text.includes(":")) return { seq: text };
    if (text.includes("T")) return { time: text };
    const day = current?.event.time?.slice(0, 10) ?? new Date().toISOString().slice(0, 10);
    return { time: `${day}T${text}Z` };
  }

  let asked = 0; // the latest request: an older answer arriving later is dropped

  async function go(step, at = current?.event.seq) {
    const mine = ++asked;
    try {
      const r = await get("replay", { ...where(at), step, pattern_key: key.value, pattern: step === "until" ? pattern.value : "" });
      if (mine !== asked) return;
      showError(r.moved ? null : step === "until" ? "No later event matches." : null);
      current = r;
      if (location.hash !== `#/replay/${r.event.seq}`) history.replaceState(null, "", `#/replay/${r.event.seq}`);
      render(r);
    } catch (e) {
      showError(e.message);
    }
  }

  function render(r) {
    const e = r.event;
    fill(
      event,
      h("div.kind-line", {}, h("span.num", {}, `#${e.seq}`), " ", h(`span.kind.k-${e.kind}`, {}, e.kind), " ", clock(e.time), " ", pidLink(e.pid, e.name), e.peer ? [" → ", pidLink(e.peer, e.peer_name)] : "", e.mfa ? h("span.mfa", {}, " " + e.mfa) : ""),
      term(e.data, { fold: 4000 }),
    );
    fill(procs, r.processes.map(processPanel));
    neighbourhood(r);
  }

  async function neighbourhood(r) {
    const e = r.event;
    const pids = r.around;
    if (!pids.length) return fill(diagram);
    let page;
    try {
      page = await get("flow", { pids: pids.join(","), after_seq: Math.max(0, e.seq - 40), before_seq: e.seq + 40, limit: 60 });
    } catch (err) {
      return fill(diagram, h("div.error", {}, err.message));
    }
    if (current !== r) return;
    const at = page.messages.find((m) => m.seq === e.seq || m.received_seq === e.seq);
    fill(diagram, h("h2", {}, "Messages around this step"), sequenceDiagram(page.lifelines, page.messages, { current: at?.seq ?? null, id: "replay-sequence" }));
  }

  function showError(message) {
    error.hidden = !message;
    error.textContent = message ?? "";
  }

  const keys = (ev) => {
    if (ev.target.closest("input, select, textarea")) return;
    const step = { ArrowRight: "next", ArrowLeft: "prev", Home: "start", End: "end" }[ev.key];
    if (step) {
      ev.preventDefault();
      go(step);
    } else if (ev.key === "g") {
      ev.preventDefault();
      jump.focus();
    }
  };
  document.addEventListener("keydown", keys);
  go(seq ? "here" : "start", seq || undefined);
  return () => document.removeEventListener("keydown", keys);
}

function processPanel(p) {
  const d = p.diff;
  return h(
    "div.proc",
    { dataset: { pid: p.pid } },
    h("h3", {}, pidLink(p.pid, p.name), p.name ? h("span.muted", {}, " " + p.pid) : ""),
    h("div.label", {}, "state"),
    p.state === null ? h("p.muted", {}, "unknown") : term(p.state, { fold: 200 }),
    d && !d.equal
      ? h(
          "ul.diff",
          {},
          d.changed.map((c) => h("li.changed", {}, h("code", {}, c.path || "(whole)"), " ", h("code.before", {}, c.before), " → ", h("code.after", {}, c.after))),
          d.added.map((c) => h("li.added", {}, "+ ", h("code", {}, c.path), " ", h("code.after", {}, c.value))),
          d.removed.map((c) => h("li.removed", {}, "− ", h("code", {}, c.path), " ", h("code.before", {}, c.value))),
        )
      : null,
    h("div.label", {}, `mailbox (${p.pending_count}${p.pending_known ? "" : ", consumption unknown"})`),
    p.pending.length ? h("ol.pending", {}, p.pending.map((m) => h("li", { dataset: { seq: m.seq } }, h("span.num", {}, `#${m.seq} `), term(m.data, { fold: 120 })))) : h("p.muted", {}, "empty"),
    p.pending_count > p.pending.length ? h("p.muted", {}, `and ${p.pending_count - p.pending.length} more`) : null,
    h("div.label", {}, "call stack"),
    p.calls.length ? h("ol.calls", {}, p.calls.map((c) => h("li", {}, h("code", {}, c)))) : h("p.muted", {}, "no open calls"),
  );
}
