// The live view: the capture's counters and controls, and a tail of its events with a filter
// (kinds, a process, a pattern in the syntax of ElixirScope.Query.find/1), paused at will.
import { get, post } from "./api.js";
import { h, fill, num, bytes } from "./dom.js";
import { eventTable, eventRow } from "./events.js";

const KEEP = 500; // rows the tail keeps
const LEVELS = ["full", "messages_only", "states_only", "minimal", "off"];
const KINDS = ["", "send", "receive", "call", "return", "exception", "state", "spawn", "exit", "link", "register", "supervisor", "var", "timeout"];

export function live(root) {
  let lastSeq = null; // the newest seq the tail has looked at; null until the first page
  let generation = 0; // bumped when the filter changes: answers to older requests are dropped
  let busy = false; // one poll at a time
  let paused = false;
  let previous = null; // the last status and when it came, for the rate

  const title = h("h1", {}, "Live");
  const cards = h("section.cards", { id: "status" });
  const error = h("div.error", { id: "filter-error", hidden: true });
  const kind = h("select", { id: "filter-kind", title: "kind" }, KINDS.map((k) => h("option", { value: k }, k || "any kind")));
  const pid = h("input", { id: "filter-pid", placeholder: "pid, e.g. #PID<0.123.0>", size: 18 });
  const patternKey = h("select", { id: "filter-key" }, ["message", "args", "result", "state", "data"].map((k) => h("option", { value: k }, k + ":")));
  const pattern = h("input", { id: "filter-pattern", placeholder: "{:increment, n} when n > 5", size: 34 });
  const pause = h("button", { id: "pause", type: "button" }, "Pause");
  const count = h("span.muted", { id: "tail-count" });
  const table = eventTable([], { id: "tail" });
  const tbody = table.querySelector("tbody");

  // The controls are built once and updated in place, so a choice being made is not reset by
  // the next poll.
  const level = h("select", { id: "level" }, LEVELS.map((l) => h("option", { value: l }, l)));
  const rate = h("input", { id: "rate", type: "number", min: 0, max: 1, step: 0.05, size: 4 });
  for (const input of [level, rate]) input.addEventListener("input", () => (input.dataset.edited = "1"));
  const act = (body) => async () => {
    try {
      const b = body();
      delete level.dataset.edited;
      delete rate.dataset.edited;
      await post("control", b);
      showError(null);
      await status();
    } catch (e) {
      showError(e.message);
    }
  };
  const stop = h("button.danger", { type: "button", id: "stop", onclick: act(() => ({ action: "stop" })) }, "Stop capture");
  const start = h("button", { type: "button", id: "start", onclick: act(() => ({ action: "start" })) }, "Start a new capture");
  const targets = h("span.targets", { id: "targets" });
  const target = h("input", { id: "trace-target", size: 22, placeholder: "pid, name or module" });
  const tracing = h(
    "form.inline",
    { id: "trace-form", onsubmit: (ev) => (ev.preventDefault(), act(() => ({ action: "trace", target: target.value }))()) },
    target,
    h("button", { type: "submit", id: "trace" }, "Trace"),
    h("button", { type: "button", id: "untrace", onclick: act(() => ({ action: "untrace", target: target.value })) }, "Untrace"),
  );
  const settings = h(
    "div.controls",
    {},
    h("label", {}, "level ", level, h("button", { type: "button", id: "set-level", onclick: act(() => ({ action: "level", level: level.value })) }, "Set")),
    h("label", {}, "sample rate ", rate, h("button", { type: "button", id: "set-rate", onclick: act(() => ({ action: "sampling", rate: Number(rate.value) })) }, "Set")),
    stop,
    start,
    tracing,
    targets,
  );
  const traceNote = h("p.muted", {}, "A saved trace: nothing to control.");
  const controls = h("section.controls", { id: "controls" });

  const filter = h(
    "form.filter",
    { id: "filter", onsubmit: (ev) => (ev.preventDefault(), restart()) },
    kind, pid, patternKey, pattern,
    h("button", { type: "submit" }, "Apply"),
    pause, count,
  );
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.classList.toggle("on", paused);
  });

  fill(root, title, cards, controls, h("h2", {}, "Events"), filter, error, h("div.scroll", {}, table));

  function params() {
    return { kind: kind.value, pid: pid.value.trim(), pattern_key: patternKey.value, pattern: pattern.value.trim() };
  }

  function restart() {
    generation += 1;
    lastSeq = null;
    tbody.replaceChildren();
    count.textContent = "";
    busy = false;
    tick();
  }

  async function tick() {
    if (busy) return;
    busy = true;
    const mine = generation;
    try {
      const s = await status();
      if (!paused && mine === generation) await tail(s, mine);
    } catch (e) {
      console.warn(e);
    } finally {
      if (mine === generation) busy = false;
    }
  }

  async function status() {
    const s = await get("status");
    const now = performance.now();
    const r = previous && now > previous.at ? ((s.events - previous.events) * 1000) / (now - previous.at) : null;
    previous = { events: s.events, at: now };
    const capture = s.mode === "live";
    document.getElementById("mode").textContent = capture ? (s.running ? "● capturing" : "○ stopped") : "saved trace";
    title.textContent = capture ? "Live" : "Saved trace";
    fill(
      cards,
      card("events", num(s.events), capture ? `last seq ${num(s.last_seq)} of ${num(s.capacity)}` : `seqs up to ${num(s.last_seq)}`),
      card("rate", r === null ? "–" : `${num(Math.max(0, Math.round(r)))}/s`, "events per second"),
      card("dropped", num(s.dropped), "store full or sampled out", s.dropped > 0 ? "warn" : ""),
      card("truncated", num(s.truncated), "payloads cut to their cap", s.truncated > 0 ? "warn" : ""),
      card("memory", bytes(s.bytes), "store memory"),
      capture ? card("level", s.tracing_level, `sampling ${s.sample_rate} by ${s.sample_by}`) : card("level", "trace", "read from disk: captures nothing"),
    );
    if (!capture) {
      if (controls.firstChild !== traceNote) fill(controls, traceNote);
      return s;
    }
    if (controls.firstChild !== settings) fill(controls, settings);
    // A value the user changed and has not set yet is theirs, not the poll's.
    if (!level.dataset.edited) level.value = s.tracing_level;
    if (!rate.dataset.edited) rate.value = s.sample_rate;
    stop.hidden = !s.running;
    start.hidden = s.running;
    const t = [...s.traced.pids, ...s.traced.modules, s.traced.all ? ":all" : null, s.traced.new ? ":new" : null].filter(Boolean);
    targets.textContent = "traced: " + (t.length ? t.join(", ") : "nothing");
    // A new capture numbers its events from 1 again: the tail starts over.
    if (lastSeq !== null && s.last_seq < lastSeq) restartSoon();
    return s;
  }

  function restartSoon() {
    setTimeout(restart, 0);
  }

  async function tail(s, mine) {
    const p = params();
    let page;
    try {
      page = lastSeq === null
        ? await get("events", { ...p, order: "desc", limit: 100 })
        : await get("events", { ...p, after_seq: lastSeq, limit: 200 });
      showError(null);
    } catch (e) {
      showError(e.message);
      return;
    }
    if (mine !== generation) return;
    if (lastSeq === null) {
      // The newest page; the tail goes on after what the store had published before it.
      const events = page.events.reverse();
      for (const e of events) tbody.append(eventRow(e));
      lastSeq = Math.max(events.length ? events[events.length - 1].seq : 0, s.published_seq);
    } else {
      for (const e of page.events) tbody.append(eventRow(e));
      lastSeq = Math.max(lastSeq, page.scanned_to ?? 0);
    }
    while (tbody.rows.length > KEEP) tbody.deleteRow(0);
    count.textContent = `${tbody.rows.length} shown`;
  }

  function showError(message) {
    error.hidden = !message;
    error.textContent = message ?? "";
  }

  tick();
  const timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

function card(label, value, note, cls = "") {
  return h(`div.card${cls ? "." + cls : ""}`, { dataset: { card: label } }, h("div.label", {}, label), h("div.value", {}, value), h("div.note", {}, note));
}
