// Live limits (PUT /api/v1/limits): every replica applies a change within the stated bound.
import { api } from "../api.js";
import { confirmAction, h, replace, table } from "../ui.js";

const FIELDS = [
  ["downLinkKiB", "downLink sent to dfget (KiB/s, 0 = none)"],
  ["seedUploadKiBps", "Seed-cache upload bandwidth, all replicas (KiB/s, 0 = unlimited)"],
  ["peerDownLimit", "PeerDownLimit: pieces one client fetches at once"],
  ["peerUpLimit", "PeerUpLimit: uploads handed to one peer at once"],
  ["cdnLoadLimit", "CDN load: pieces from the seed cache at once, per task"],
];

export default {
  mount(root, _args, ctx) {
    const inputs = Object.fromEntries(FIELDS.map(([name]) => [name, h("input", { type: "number", min: 0, step: 1,
      id: `limit-${name}`, name })]));
    const state = h("div");
    const form = h("form", { class: "stack", id: "limits-form" },
      FIELDS.map(([name, label]) => h("label", {}, label, inputs[name])),
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Apply changes")));
    replace(root, h("h2", {}, "Live limits"), state, h("h3", {}, "Change"), form);
    let current = null;
    let filled = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const change = {};
      for (const [name] of FIELDS) {
        const raw = inputs[name].value.trim();
        if (raw === "") continue;
        const value = Number(raw);
        if (!current || value !== current.limits[name]) change[name] = value;
      }
      if (!Object.keys(change).length) { await ctx.act(null, () => Promise.reject(new Error("Nothing changed."))); return; }
      const lines = Object.entries(change).map(([k, v]) => `${k}: ${current ? current.limits[k] : "?"} → ${v}`);
      if (!await confirmAction("Change the cluster's live limits?", ...lines,
        `Every replica applies this within ${current ? current.appliedWithinSeconds : "a few"} s.`)) return;
      await ctx.act("Limits changed.", () => api("/api/v1/limits", { method: "PUT", body: change }));
    });
    const reset = (name) => async () => {
      if (await confirmAction(`Reset ${name} to the setting?`, `Back to ${current.defaults[name]}.`)) {
        await ctx.act(`${name} reset.`, () => api("/api/v1/limits", { method: "PUT", body: { [name]: null } }));
      }
    };
    return {
      async refresh() {
        current = await api("/api/v1/limits");
        if (!filled) {
          for (const [name] of FIELDS) inputs[name].value = current.limits[name];
          filled = true;
        }
        replace(state,
          h("p", { class: "muted" }, `Applied by every replica within ${current.appliedWithinSeconds} s · `
            + `${current.liveReplicas} live replica(s), seed upload share `
            + `${current.seedUploadPerReplicaKiBps || "unlimited"} KiB/s each.`),
          table([
            { title: "Limit", cell: (r) => r.label },
            { title: "In force", class: "num", cell: (r) => h("span", { id: `now-${r.name}` }, String(current.limits[r.name])) },
            { title: "Setting", class: "num", cell: (r) => String(current.defaults[r.name]) },
            { title: "Source", cell: (r) => (r.name in current.overrides ? "changed live" : "setting") },
            { title: "", cell: (r) => (r.name in current.overrides
              ? h("button", { type: "button", onclick: reset(r.name) }, "Reset") : "") },
          ], FIELDS.map(([name, label]) => ({ name, label }))));
      },
    };
  },
};
