// Preheats of both contracts (legacy /preheats, Open API jobs, Harbor webhooks) with per-layer
// progress, a form to start an image or file preheat, and a retry that reuses the stored request.
import { api } from "../api.js";
import { badge, bytes, confirmAction, h, progress, replace, short, table } from "../ui.js";

function headersOf(text) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf(":");
    if (at <= 0) throw new Error(`header line "${line}" is not "Name: value"`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function layers(p) {
  if (!p.progress.length) return h("span", { class: "muted" }, p.status === "WAITING" ? "not started" : "no layer");
  return h("div", { class: "layers" }, p.progress.map((l) => h("div", { class: "layer" },
    h("div", {}, h("div", { class: "mono url" }, l.digest || l.url), l.error ? h("div", { class: "error-text" }, l.error) : null),
    progress(l.totalBytes ? (l.seededBytes * 100) / l.totalBytes : (l.status === "SUCCESS" ? 100 : null),
      `${l.status} ${l.totalBytes ? `${bytes(l.seededBytes)} / ${bytes(l.totalBytes)}` : ""}`.trim()))));
}

export default {
  mount(root, _args, ctx) {
    const type = h("select", { id: "preheat-type", name: "type" }, h("option", { value: "image" }, "image"),
      h("option", { value: "file" }, "file"));
    const url = h("input", { id: "preheat-url", name: "url", type: "url", required: true,
      placeholder: "https://registry/v2/<repo>/manifests/<tag> or a file URL" });
    const filter = h("input", { id: "preheat-filter", name: "filter", placeholder: "query names dropped (a&b)" });
    const identifier = h("input", { id: "preheat-identifier", name: "identifier" });
    const headers = h("textarea", { id: "preheat-headers", rows: 2, placeholder: "Authorization: Bearer …" });
    const form = h("form", { class: "stack", id: "preheat-form" },
      h("label", {}, "Type", type), h("label", {}, "URL", url), h("label", {}, "Filter", filter),
      h("label", {}, "Identifier", identifier), h("label", {}, "Headers (one Name: value per line)", headers),
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Start preheat")));
    const list = h("div");
    replace(root, h("h2", {}, "Preheats"), list, h("h2", {}, "Start a preheat"), form);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let body;
      try {
        body = { type: type.value, url: url.value.trim(), filter: filter.value.trim(),
          identifier: identifier.value.trim(), headers: headersOf(headers.value) };
      } catch (err) {
        await ctx.act(null, () => Promise.reject(err));
        return;
      }
      if (!await confirmAction(`Start a ${body.type} preheat?`, body.url)) return;
      const created = await ctx.act("Preheat started.", () => api("/api/v1/preheats", { method: "POST", body }));
      if (created) form.dataset.started = created.ID;
    });
    return {
      async refresh() {
        const rows = await api("/api/v1/preheat-progress", { query: { limit: 50 } });
        replace(list, table([
          { title: "Preheat", cell: (p) => [h("span", { class: "mono" }, short(p.ID)),
            h("div", { class: "muted" }, `${p.type} · ${p.origin} · ${p.actor}`)] },
          { title: "URL", class: "url", cell: (p) => p.url },
          { title: "Status", cell: (p) => [badge(p.status), p.errorMsg ? h("div", { class: "error-text" }, p.errorMsg) : null] },
          { title: "Layers", cell: layers },
          { title: "Started", class: "hide-narrow", cell: (p) => new Date(p.startTime).toLocaleString() },
          { title: "", cell: (p) => h("button", { type: "button", "data-action": "retry",
            onclick: async () => {
              if (await confirmAction("Run this preheat again?", p.url, "Layers already seeded are reused."))
                await ctx.act("Preheat restarted.", () => api(`/api/v1/preheats/${p.ID}/retry`, { method: "POST" }));
            } }, p.status === "FAILED" ? "Retry" : "Run again") },
        ], rows.map((p) => ({ ...p, attrs: { "data-preheat": p.ID, "data-status": p.status } })), "No preheat yet."));
      },
    };
  },
};
