// Crashes: every recorded abnormal exit with its why_crashed/1 report.
import { get } from "./api.js";
import { h, fill, clock, pidLink } from "./dom.js";

export async function crashes(root) {
  fill(root, h("h1", {}, "Crashes"), h("p.muted", {}, "Loading…"));
  const { crashes } = await get("crashes");
  fill(
    root,
    h("h1", {}, "Crashes"),
    crashes.length
      ? h(
          "div",
          { id: "crashes" },
          crashes.map((c) =>
            h(
              "article.crash",
              { dataset: { seq: c.seq, pid: c.pid } },
              h("h2", {}, pidLink(c.pid, c.name), " ", h("span.muted", {}, `exited at #${c.seq}, ${clock(c.time)}`), " ", h("a", { href: `#/replay/${c.seq}` }, "replay")),
              h("code.reason", {}, c.reason),
              c.report ? h("pre.report", {}, c.report) : h("p.muted", {}, "No report."),
            ),
          ),
        )
      : h("p.muted", { id: "crashes" }, "No abnormal exit recorded."),
  );
}
