// Router, sign-in and the polling loop. Each view mounts once (forms keep what the operator typed) and
// is refreshed every POLL_MS while the tab is visible; a refresh never overlaps the previous one.
import { api, ApiError, stats, token } from "./api.js";
import { h, notify, replace } from "./ui.js";
import audit from "./views/audit.js";
import limits from "./views/limits.js";
import overview from "./views/overview.js";
import peers from "./views/peers.js";
import preheats from "./views/preheats.js";
import task from "./views/task.js";
import tasks from "./views/tasks.js";

const POLL_MS = 2000;
const VIEWS = { overview, tasks, task, peers, preheats, audit, limits };
const root = document.getElementById("view");
const errorBox = document.getElementById("error");
const statusLine = document.getElementById("status-line");
let mounted = null;
let timer = null;
let generation = 0;
let stickyUntil = 0;

function setError(message, sticky = false) {
  if (!message && Date.now() < stickyUntil) return;
  if (sticky) stickyUntil = Date.now() + 15000;
  errorBox.textContent = message || "";
  errorBox.hidden = !message;
}

// Runs an operator action: its error (the API's own message) stays on screen for a while.
async function act(what, call) {
  try {
    const result = await call();
    stickyUntil = 0;
    setError("");
    if (what) notify(what);
    await refresh();
    return result;
  } catch (err) {
    if (err instanceof ApiError && err.isAuth) askToken(err.message);
    setError(err.message, true);
    return undefined;
  }
}

function askToken(message = "") {
  const dialog = document.getElementById("login");
  document.getElementById("login-error").textContent = message;
  if (!dialog.open) dialog.showModal();
  document.getElementById("token").focus();
}

function sessionUi() {
  const signed = Boolean(token.get());
  document.getElementById("signin").hidden = signed;
  document.getElementById("signout").hidden = !signed;
}

async function refresh() {
  clearTimeout(timer);
  const mine = ++generation;
  try {
    if (mounted) await mounted.refresh();
    if (mine !== generation) return;
    setError("");
    statusLine.textContent = `updated ${new Date().toLocaleTimeString()} · ${stats.calls} API calls`;
    statusLine.dataset.ok = "true";
  } catch (err) {
    if (mine !== generation) return;
    statusLine.dataset.ok = "false";
    if (err instanceof ApiError && err.isAuth) {
      askToken(token.get() ? err.message : "This cluster's API needs a token.");
      setError(err.message);
    } else {
      setError(err.message || String(err));
    }
  } finally {
    if (mine === generation) timer = setTimeout(tick, POLL_MS);
  }
}

function tick() {
  if (document.hidden) { timer = setTimeout(tick, POLL_MS); return; }
  refresh();
}

function route() {
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const key = VIEWS[name] ? name : "overview";
  for (const link of document.querySelectorAll("#nav a")) {
    const current = link.dataset.view === key || (key === "task" && link.dataset.view === "tasks");
    if (current) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  replace(root, h("p", { class: "muted" }, "Loading…"));
  const container = h("section", { "data-view": key });
  mounted = VIEWS[key].mount(container, args, { act, api, navigate: (hash) => { location.hash = hash; } });
  replace(root, container);
  stickyUntil = 0;
  setError("");
  refresh();
}

document.getElementById("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = document.getElementById("token").value.trim();
  if (!value) return;
  token.set(value);
  sessionUi();
  document.getElementById("login").close();
  refresh();
});
document.getElementById("login-cancel").addEventListener("click", () => document.getElementById("login").close());
document.getElementById("signin").addEventListener("click", () => askToken());
document.getElementById("signout").addEventListener("click", () => {
  token.clear();
  sessionUi();
  document.getElementById("token").value = "";
  refresh();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
window.addEventListener("hashchange", route);
sessionUi();
route();
