// The table of events shared by the live tail and a process's timeline.
import { h, term, clock, pidLink } from "./dom.js";

/** A table of events (as the API writes them), newest last. */
export function eventTable(events, { id } = {}) {
  return h(
    "table.events",
    { id },
    h("thead", {}, h("tr", {}, h("th", {}, "seq"), h("th", {}, "time"), h("th", {}, "kind"), h("th", {}, "process"), h("th", {}, "peer"), h("th", {}, "what"))),
    h("tbody", {}, events.map(eventRow)),
  );
}

/** One event's row. */
export function eventRow(e) {
  return h(
    "tr",
    { dataset: { seq: e.seq, kind: e.kind } },
    h("td.num", {}, e.seq),
    h("td.time", {}, clock(e.time)),
    h(`td.kind.k-${e.kind}`, {}, e.kind),
    h("td", {}, pidLink(e.pid, e.name)),
    h("td", {}, e.peer ? pidLink(e.peer, e.peer_name) : ""),
    h("td.what", {}, e.mfa ? h("span.mfa", {}, e.mfa + " ") : "", term(e.data)),
  );
}
