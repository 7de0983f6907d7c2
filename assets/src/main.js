// The page's router: #/live, #/processes, #/process/<pid>. Each view fills <main> and may
// return a function that stops its timers.
import { live } from "./live.js";
import { processes, process } from "./processes.js";
import { h, fill } from "./dom.js";

const root = document.getElementById("view");
let stop = null;

async function route() {
  if (stop) stop();
  stop = null;
  const hash = location.hash || "#/live";
  const [, view, arg] = hash.match(/^#\/([a-z]+)\/?(.*)$/) ?? [];
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("on", a.dataset.view === view || (view === "process" && a.dataset.view === "processes"));
  try {
    if (view === "processes") await processes(root);
    else if (view === "process") await process(root, decodeURIComponent(arg));
    else stop = live(root);
  } catch (e) {
    fill(root, h("div.error", {}, e.message));
  }
}

window.addEventListener("hashchange", route);
route();
