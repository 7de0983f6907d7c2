// Drives the web UI in Debian's Chromium (playwright-core) and checks that every view shows what
// the Elixir API answered: node test/browser/ui.mjs <url> <expected.json> <screenshot dir>.
// Run by test/elixir_scope/ui_browser_test.exs, which starts the traced app and the UI and
// writes the expected answers. Exits 1 with the failed checks listed.
import { createRequire } from "node:module";
import { readFileSync, mkdirSync } from "node:fs";

const require = createRequire(new URL("../../assets/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [url, expectedPath, shots] = process.argv.slice(2);
const expected = JSON.parse(readFileSync(expectedPath, "utf8"));
mkdirSync(shots, { recursive: true });

const failures = [];
const check = (name, ok, detail = "") => {
  console.log(`${ok ? "ok  " : "FAIL"} [${expected.mode}] ${name}${ok ? "" : ": " + detail}`);
  if (!ok) failures.push(name);
};
const same = (name, got, want) => check(name, JSON.stringify(got) === JSON.stringify(want), `got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
const errors = [];
page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
page.on("pageerror", (e) => errors.push(e.message));
page.setDefaultTimeout(10_000);

const seqs = (selector) => page.$$eval(`${selector} tbody tr`, (rows) => rows.map((r) => Number(r.dataset.seq)));
const live = expected.mode === "live";
const shot = (name) => page.screenshot({ path: `${shots}/${live ? "" : "trace-"}${name}.png` });

try {
  // Live: the counters, the tail of the newest events, a filter, a bad filter, pause.
  await page.goto(url + "#/live");
  await page.waitForSelector('#status [data-card="events"]');
  await page.waitForFunction((n) => document.querySelectorAll("#tail tbody tr").length >= n, expected.tail.length);
  const events = await page.textContent('#status [data-card="events"] .value');
  same("live: the events card is status().events", Number(events.replace(/,/g, "")), expected.status.events);
  same("live: the tail is the newest events, oldest first", await seqs("#tail"), expected.tail);
  same("live: the level card", (await page.textContent('#status [data-card="level"] .value')).trim(), live ? expected.status.tracing_level : "trace");
  if (live) check("live: the traced targets are listed", (await page.textContent("#targets")).includes(expected.counter));
  else check("trace: no controls", (await page.textContent("#controls")).includes("nothing to control"));
  await shot("live");

  await page.selectOption("#filter-key", "message");
  await page.fill("#filter-pattern", expected.pattern);
  await page.click('#filter button[type="submit"]');
  await page.waitForFunction((n) => document.querySelectorAll("#tail tbody tr").length === n, expected.matches.length);
  same("live: a pattern shows exactly Query.find/1's matches", await seqs("#tail"), expected.matches);
  await shot("live-filtered");

  await page.fill("#filter-pattern", expected.bad_pattern);
  await page.click('#filter button[type="submit"]');
  await page.waitForSelector("#filter-error:not([hidden])");
  same("live: a bad pattern shows the parser's message", await page.textContent("#filter-error"), expected.bad_pattern_error);
  await shot("live-bad-pattern");

  await page.click("#pause");
  same("live: pause turns into resume", await page.textContent("#pause"), "Resume");
  await page.click("#pause");

  // Processes: one row per process with events, with its count.
  await page.goto(url + "#/processes");
  await page.waitForSelector("#processes tbody tr");
  const rows = await page.$$eval("#processes tbody tr", (rs) => rs.map((r) => [r.dataset.pid, Number(r.cells[2].textContent.replace(/,/g, ""))]));
  same("processes: pids and event counts are group_by(:pid)'s", rows.sort(), Object.entries(expected.processes).sort());
  await shot("processes");

  // A process: its timeline, paged; its states with diffs and the chart; messages by tag.
  await page.click(`#processes a[title="${expected.counter}"]`);
  await page.waitForSelector("#timeline tbody tr");
  same("process: the first timeline page is Query.timeline's", await seqs("#timeline"), expected.timeline[0]);
  await shot("process-timeline");
  await page.click("#next");
  await page.waitForFunction((first) => Number(document.querySelector("#timeline tbody tr")?.dataset.seq) === first, expected.timeline[1][0]);
  same("process: the next page follows it", await seqs("#timeline"), expected.timeline[1]);
  await page.click("#prev");
  await page.waitForFunction((first) => Number(document.querySelector("#timeline tbody tr")?.dataset.seq) === first, expected.timeline[0][0]);

  await page.click("#tab-states");
  await page.waitForSelector("#states li.state");
  const states = await page.$$eval("#states li.state", (ls) => ls.map((l) => Number(l.dataset.seq)));
  same("process: the states are the state events", states, expected.states.map((s) => s.seq));
  const texts = await page.$$eval("#states li.state", (ls) => ls.map((l) => (l.querySelector("pre") ?? l.querySelector("code.term")).textContent));
  same("process: each state as inspect prints it", texts, expected.states.map((s) => s.text));
  const changed = await page.$$eval("#states li.state:nth-child(3) ul.diff li.changed code:first-child", (cs) => cs.map((c) => c.textContent));
  same("process: the third state's diff names the changed keys", changed.sort(), expected.third_changed.sort());
  const series = await page.$$eval("#state-chart path.series", (ps) => ps.map((p) => p.dataset.series));
  same("process: the chart draws the numeric fields", series.sort(), expected.numeric_fields.sort());
  await shot("process-states");

  await page.click("#tab-messages");
  await page.waitForSelector("#tags tr");
  const tags = await page.$$eval("#tags tr", (rs) => rs.map((r) => [r.cells[0].textContent, Number(r.cells[1].textContent)]));
  same("process: received messages by tag", tags.sort(), Object.entries(expected.tags).sort());
  await shot("process-messages");

  // Message flow: one arrow per message of Query.sequence/2, sender and receiver as it says.
  await page.goto(url + `#/flow?pids=${encodeURIComponent(expected.flow_pids)}`);
  await page.waitForSelector("#sequence g.msg");
  const arrows = await page.$$eval("#sequence g.msg", (gs) => gs.map((g) => [Number(g.dataset.seq), g.dataset.from, g.dataset.to, g.classList[1]]));
  same("flow: the arrows are Query.sequence's messages", arrows, expected.flow);
  await page.click(`#sequence g.msg[data-seq="${expected.flow[0][0]}"] text.label`);
  check("flow: clicking an arrow shows the message", (await page.textContent("#flow-detail h2")).startsWith(`#${expected.flow[0][0]}`));
  await shot("flow");

  // Supervision tree: now, and the restart between the first event and now.
  await page.goto(url + "#/tree");
  await page.waitForSelector("#tree .node");
  const kids = await page.$$eval(`#tree .node[data-pid="${expected.sup}"] + ul > li > .node`, (ns) => ns.map((n) => n.dataset.pid));
  same("tree: the children are supervision_tree_at(:now)'s", kids, expected.tree_children);
  const change = await page.$$eval("#changes tr", (rs) => rs.map((r) => Number(r.dataset.seq)));
  same("tree: the window lists every supervisor's changes", change, expected.changes);
  check("tree: the restart is among them", change.includes(expected.restart.seq));
  check("tree: the restarted child is marked", await page.$eval(`#tree .node[data-pid="${expected.restart.pid}"]`, (n) => n.classList.contains("changed")));
  await shot("tree");
  // Back before the restart: the old worker is the child.
  await page.$eval("#tree-at", (el, v) => { el.value = v; el.dispatchEvent(new Event("input")); }, expected.restart.seq - 1);
  await page.waitForSelector(`#tree .node[data-pid="${expected.restart.old_pid}"]`);
  check("tree: the slider travels back to the old worker", true);
  await shot("tree-before");

  // Replay: from the poison call's receipt, three steps by keyboard; state equals state_at.
  await page.goto(url + `#/replay/${expected.replay[0].seq}`);
  const replayAt = async (want) => {
    await page.waitForFunction((seq) => document.querySelector("#replay-event .num")?.textContent === `#${seq}`, want.seq);
    const state = await page.$eval(`#replay-processes .proc[data-pid="${want.pid}"]`, (p) => {
      const t = p.querySelector("details.term pre, code.term");
      return t ? t.textContent : null;
    });
    same(`replay: #${want.seq} shows the state state_at gives`, state, want.state);
  };
  await replayAt(expected.replay[0]);
  await page.waitForSelector("#replay-sequence");
  await shot("replay");
  for (const step of expected.replay.slice(1)) {
    await page.keyboard.press("ArrowRight");
    await replayAt(step);
  }
  await page.keyboard.press("ArrowLeft");
  await replayAt(expected.replay[2]);
  // A time of day: the last event at or before it.
  await page.fill("#replay-seq", expected.jump.clock);
  await page.click("#replay-jump");
  await page.waitForFunction((seq) => document.querySelector("#replay-event .num")?.textContent === `#${seq}`, expected.jump.seq);
  check("replay: a jump to a time lands where Replay.open(time) does", true);
  await page.selectOption("#replay-key", "data");
  await page.fill("#replay-seq", String(expected.replay[0].seq));
  await page.click("#replay-jump");
  await page.waitForFunction((seq) => document.querySelector("#replay-event .num")?.textContent === `#${seq}`, expected.replay[0].seq);
  await page.fill("#replay-pattern", "{:error, %ArgumentError{}}");
  await page.click("#replay-until");
  await page.waitForFunction((seq) => document.querySelector("#replay-event .num")?.textContent === `#${seq}`, expected.until);
  check("replay: step until a pattern lands on the exception", true);
  await shot("replay-until");

  // Crashes: the worker's, with why_crashed's report.
  await page.goto(url + "#/crashes");
  await page.waitForSelector("#crashes article.crash");
  const reports = await page.$$eval("#crashes article.crash", (as) => as.map((a) => [a.dataset.pid, a.querySelector("pre.report").textContent]));
  same("crashes: one crash, why_crashed's report", reports, [[expected.crash.pid, expected.crash.report]]);
  await shot("crashes");

  // Variables: the tracked call, each line's recorded values.
  await page.goto(url + "#/vars");
  await page.waitForSelector("#source-lines tr");
  same("vars: the tracked call is listed", await page.$$eval("#calls tr", (rs) => rs.map((r) => Number(r.dataset.seq))), [expected.call]);
  const values = await page.$$eval("#source-lines tr", (rs) =>
    rs.filter((r) => r.querySelector(".binding")).map((r) => [Number(r.dataset.line), [...r.querySelectorAll(".binding")].map((b) => b.textContent)]),
  );
  same("vars: the values beside each line", values, expected.source);
  await shot("vars");

  // The live controls: a level chosen stays chosen across polls and is applied; stop, then a
  // new capture, whose tail starts over.
  if (live) {
    await page.goto(url + "#/live");
    await page.waitForSelector("#level");
    await page.selectOption("#level", "messages_only");
    await page.waitForTimeout(1500);
    same("controls: a level being chosen is not reset by the polls", await page.$eval("#level", (s) => s.value), "messages_only");
    await page.click("#set-level");
    await page.waitForFunction(() => document.querySelector('#status [data-card="level"] .value')?.textContent === "messages_only");
    await page.fill("#trace-target", expected.counter);
    await page.click("#untrace");
    await page.waitForFunction((pid) => !document.querySelector("#targets").textContent.includes(pid), expected.counter);
    await page.click("#trace");
    await page.waitForFunction((pid) => document.querySelector("#targets").textContent.includes(pid), expected.counter);
    check("controls: untrace and trace a process from the page", true);
    await page.click("#stop");
    await page.waitForSelector("#start:not([hidden])");
    await page.click("#start");
    await page.waitForSelector("#stop:not([hidden])");
    await page.waitForFunction(() => document.querySelector("#tail tbody").rows.length === 0);
    check("controls: stop, then a new capture: the tail starts over", true);
    await shot("live-restarted");
  }

  // The bad pattern's 400 is logged by the browser as a failed load: the one error expected.
  const unexpected = errors.filter((e) => !e.includes("status of 400"));
  check("no console errors", unexpected.length === 0, unexpected.join(" | "));
} catch (e) {
  check("the page answered", false, e.stack);
  await shot("failure").catch(() => {});
} finally {
  await browser.close();
}
process.exit(failures.length ? 1 : 0);
