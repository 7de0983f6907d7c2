// The live view: the capture's counters and controls, and a tail of its events with a filter
// (kinds, a process, a pattern in the syntax of ElixirScope.Query.find/1), paused at will.
import { get, post } from "./api.js";
import { h, fill, num, bytes } from "./dom.js";
import { eventTable, eventRow } from "./events.js";

const KEEP = 500; // rows the tail keeps
const LEVELS = ["full", "messages_only", "states_only", "minimal", "off"];
const KINDS = ["", "send", "receive", "call", "return", "exception", "state", "spawn", "exit", "link", "register", "supervisor", "var", "timeout"];

export function live(root) {
  let lastSeq = null; // the newest seq shown; null until the first page
  let paused = false;
  let previous = null; // the last status and when it came, for the rate
  let timer = null;

  const cards = h("section.cards", { id: "status" });
  const controls = h("section.controls", { id: "controls" });
  const error = h("div.error", { id: "filter-error", hidden: true });
  const kind = h("select", { id: "filter-kind", title: "kind" }, KINDS.map((k) => h("option", { value: k }, k || "any kind")));
  const pid = h("input", { id: "filter-pid", placeholder: "pid, e.g. #PID<0.123.0>", size: 18 });
  const patternKey = h("select", { id: "filter-key" }, ["message", "args", "result", "state", "data"].map((k) => h("option", { value: k }, k + ":")));
  const pattern = h("input", { id: "filter-pattern", placeholder: "{:increment, n} when n > 5", size: 34 });
  const pause = h("button", { id: "pause", type: "button" }, "Pause");
  const count = h("span.muted", { id: "tail-count" });
  const table = eventTable([], { id: "tail" });
  const tbody = table.querySelector("tbody");

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

  fill(root, h("h1", {}, "Live"), cards, controls, h("h2", {}, "Events"), filter, error, h("div.scroll", {}, table));

  function params() {
    return { kind: kind.value, pid: pid.value.trim(), pattern_key: patternKey.value, pattern: pattern.value.trim() };
  }

  function restart() {
    lastSeq = null;
    tbody.replaceChildren();
    count.textContent = "";
    tick();
  }

  async function tick() {
    try {
      await Promise.all([status(), paused ? null : tail()]);
    } catch (e) {
      console.warn(e);
    }
  }

  async function status() {
    const s = await get("status");
    const now = performance.now();
    const rate = previous && now > previous.at ? ((s.events - previous.events) * 1000) / (now - previous.at) : null;
    previous = { events: s.events, at: now };
    document.getElementById("mode").textContent = s.mode === "live" ? (s.running ? "● capturing" : "○ stopped") : "saved trace";
    const capture = s.mode === "live";
    document.querySelector("#view h1").textContent = capture ? "Live" : "Saved trace";
    fill(
      cards,
      card("events", num(s.events), capture ? `last seq ${num(s.last_seq)} of ${num(s.capacity)}` : `seqs up to ${num(s.last_seq)}`),
      card("rate", rate === null ? "–" : `${num(Math.max(0, Math.round(rate)))}/s`, "events per second"),
      card("dropped", num(s.dropped), "store full or sampled out", s.dropped > 0 ? "warn" : ""),
      card("truncated", num(s.truncated), "payloads cut to their cap", s.truncated > 0 ? "warn" : ""),
      card("memory", bytes(s.bytes), "store memory"),
      capture ? card("level", s.tracing_level, `sampling ${s.sample_rate} by ${s.sample_by}`) : card("level", "trace", "read from disk: captures nothing"),
    );
    fill(controls, s.mode === "live" ? controlsFor(s) : h("p.muted", {}, "A saved trace: nothing to control."));
  }

  function controlsFor(s) {
    const level = h("select", { id: "level" }, LEVELS.map((l) => h("option", { value: l, selected: l === s.tracing_level }, l)));
    const rate = h("input", { id: "rate", type: "number", min: 0, max: 1, step: 0.05, value: s.sample_rate, size: 4 });
    const act = (body) => async () => {
      try {
        await post("control", body());
        await status();
      } catch (e) {
        showError(e.message);
      }
    };
    const targets = [
      ...s.traced.pids,
      ...s.traced.modules,
      s.traced.all ? ":all" : null,
      s.traced.new ? ":new" : null,
    ].filter(Boolean);
    return [
      h("label", {}, "level ", level, h("button", { type: "button", id: "set-level", onclick: act(() => ({ action: "level", level: level.value })) }, "Set")),
      h("label", {}, "sample rate ", rate, h("button", { type: "button", id: "set-rate", onclick: act(() => ({ action: "sampling", rate: Number(rate.value) })) }, "Set")),
      s.running
        ? h("button.danger", { type: "button", id: "stop", onclick: act(() => ({ action: "stop" })) }, "Stop capture")
        : h("button", { type: "button", id: "start", onclick: act(() => ({ action: "start" })) }, "Start a new capture"),
      h("span.targets", { id: "targets" }, "traced: ", targets.length ? targets.join(", ") : "nothing"),
    ];
  }

  async function tail() {
    const p = params();
    let page, before;
    try {
      // The newest page first, and how far the store had published before it was asked for.
      if (lastSeq === null) before = await get("status");
      page = lastSeq === null
        ? await get("events", { ...p, order: "desc", limit: 100 })
        : await get("events", { ...p, after_seq: lastSeq, limit: 200 });
      showError(null);
    } catch (e) {
      showError(e.message);
      return;
    }
    const first = lastSeq === null;
    const events = first ? page.events.reverse() : page.events;
    if (first) {
      lastSeq = Math.max(events.length ? events[events.length - 1].seq : 0, before.published_seq);
    } else {
      lastSeq = Math.max(lastSeq, page.scanned_to ?? 0);
    }
    for (const e of events) tbody.append(eventRow(e));
    while (tbody.rows.length > KEEP) tbody.deleteRow(0);
    count.textContent = `${tbody.rows.length} shown`;
  }

  function showError(message) {
    error.hidden = !message;
    error.textContent = message ?? "";
  }

  tick();
  timer = setInterval(tick, 1000);
  return () => clearInterval(timer);
}

function card(label, value, note, cls = "") {
  return h(`div.card${cls ? "." + cls : ""}`, { dataset: { card: label } }, h("div.label", {}, label), h("div.value", {}, value), h("div.note", {}, note));
}
