// The page's router: #/live, #/processes, #/process/<pid>, #/flow, #/tree, #/replay/<seq>,
// #/crashes, #/vars/<seq>. Each view fills <main> and may return a function that stops its
// timers and listeners.
import { live } from "./live.js";
import { processes, process } from "./processes.js";
import { flow } from "./flow.js";
import { tree } from "./tree.js";
import { replay } from "./replay.js";
import { crashes } from "./crashes.js";
import { vars } from "./vars.js";
import { h, fill } from "./dom.js";

const root = document.getElementById("view");
let stop = null;

async function route() {
  if (stop) stop();
  stop = null;
  const hash = location.hash || "#/live";
  const [, view, rest = ""] = hash.match(/^#\/([a-z]+)\/?([^?]*)(?:\?.*)?$/) ?? [];
  const tab = view === "process" ? "processes" : view;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("on", a.dataset.view === tab);
  try {
    const arg = decodeURIComponent(rest);
    const query = new URLSearchParams(hash.split("?")[1] ?? "");
    if (view === "processes") await processes(root);
    else if (view === "process") await process(root, arg);
    else if (view === "flow") await flow(root, query);
    else if (view === "tree") await tree(root, query);
    else if (view === "replay") stop = replay(root, arg ? Number(arg) : null);
    else if (view === "crashes") await crashes(root);
    else if (view === "vars") await vars(root, arg ? Number(arg) : null);
    else stop = live(root);
  } catch (e) {
    fill(root, h("div.error", {}, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
