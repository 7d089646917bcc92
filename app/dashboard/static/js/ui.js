// Small DOM helpers shared by the views. States always carry text or a symbol next to any colour.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function bytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Number(n);
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return `${unit === 0 ? value : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export const percent = (ratio) => (ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(1)} %`);

const STATES = {
  SUCCESS: ["ok", "✔"], FAILED: ["bad", "✖"], FAIL: ["bad", "✖"], FAILURE: ["bad", "✖"], REFUSED: ["bad", "⛔"],
  RUNNING: ["run", "⟳"], WAITING: ["idle", "…"], PENDING: ["idle", "…"], ok: ["ok", "✔"], error: ["bad", "✖"],
  down: ["warn", "↓"], sqlite: ["ok", "✔"], "not configured": ["warn", "–"], refused: ["bad", "⛔"],
  failed: ["bad", "✖"],
};

export function badge(state, text) {
  const [kind, symbol] = STATES[state] || ["idle", "•"];
  return h("span", { class: `badge ${kind}`, "data-state": state }, h("span", { "aria-hidden": "true" }, symbol),
    text ?? state ?? "unknown");
}

export function okBadge(ok, yes = "ok", no = "failing") {
  return badge(ok ? "ok" : "error", ok ? yes : no);
}

export function progress(pct, label) {
  const value = pct === null || pct === undefined ? null : Math.max(0, Math.min(100, pct));
  const text = label ?? (value === null ? "unknown" : `${value.toFixed(value % 1 ? 1 : 0)} %`);
  return h("div", { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": value ?? undefined, "aria-label": text },
  h("span", { style: `width:${value ?? 0}%` }), h("b", {}, text));
}

// Bytes by source class as a bar plus the numbers in text (the colours are only a help).
export function split(traffic) {
  const t = traffic || { peer: 0, seed: 0, source: 0 };
  const total = t.peer + t.seed + t.source;
  const part = (name) => h("span", { class: name, style: `width:${total ? (t[name] * 100) / total : 0}%` });
  return h("div", { class: "split-cell", "data-peer": t.peer, "data-seed": t.seed, "data-source": t.source },
    h("div", { class: "split", "aria-hidden": "true" }, part("peer"), part("seed"), part("source")),
    h("div", { class: "legend" },
      h("span", {}, h("i", { class: "peer" }), `peer ${bytes(t.peer)}`),
      h("span", {}, h("i", { class: "seed" }), `seed ${bytes(t.seed)}`),
      h("span", {}, h("i", { class: "source" }), `source ${bytes(t.source)}`)));
}

export function table(columns, rows, empty = "Nothing to show.") {
  const head = h("tr", {}, columns.map((c) => h("th", { class: c.class, scope: "col" }, c.title)));
  const body = rows.length
    ? rows.map((row) => h("tr", row.attrs || {}, columns.map((c) => h("td", { class: c.class }, c.cell(row)))))
    : [h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty))];
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

export function replace(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds.toFixed(1)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

export const short = (id, n = 12) => (id && id.length > n ? `${id.slice(0, n)}…` : id || "");

// A confirmation before any action: resolves true only on an explicit "Confirm".
export function confirmAction(title, ...body) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  replace(document.getElementById("confirm-body"), body.map((b) => (typeof b === "string" ? h("p", {}, b) : b)));
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

export function notify(message) {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(notify.timer);
  notify.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

export function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}
