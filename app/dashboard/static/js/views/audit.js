// Audit: the newest events, filtered by actor, action, task and time (GET /api/v1/audit).
import { api } from "../api.js";
import { badge, h, replace, short, table } from "../ui.js";

const PAGE = 50;

export default {
  mount(root) {
    let offset = 0;
    const field = (name, label, attrs = {}) => h("label", {}, label, h("input", { name, id: `audit-${name}`, ...attrs }));
    const form = h("form", { class: "inline", id: "audit-form" },
      field("actor", "Actor", { placeholder: "dfget, tests, seeder…" }),
      field("action", "Action", { placeholder: "task.deleted…" }),
      field("task_id", "Task id", { placeholder: "64 hex" }),
      field("since", "Since", { placeholder: "2026-01-01T00:00:00Z" }),
      field("until", "Until", { placeholder: "RFC3339 or epoch ms" }),
      h("button", { type: "submit", class: "primary" }, "Filter"));
    const list = h("div");
    const pager = h("div", { class: "pager" });
    replace(root, h("h2", {}, "Audit log"), form, list, pager);
    const view = {
      async refresh() {
        const query = { limit: PAGE, offset };
        for (const input of form.querySelectorAll("input")) query[input.name] = input.value.trim();
        const page = await api("/api/v1/audit", { query });
        replace(list, table([
          { title: "When", cell: (e) => new Date(e.at).toLocaleString() },
          { title: "Actor", cell: (e) => e.actor },
          { title: "Action", cell: (e) => e.action },
          { title: "Outcome", cell: (e) => badge(e.outcome, e.outcome) },
          { title: "Task", cell: (e) => (e.taskId ? h("a", { href: `#/task/${e.taskId}`, class: "mono" }, short(e.taskId)) : "") },
          { title: "Target", class: "url", cell: (e) => e.target },
          { title: "From", class: "hide-narrow", cell: (e) => e.sourceIp },
          { title: "Detail", class: "hide-narrow", cell: (e) => (Object.keys(e.detail).length
            ? h("details", {}, h("summary", {}, "detail"), h("pre", {}, JSON.stringify(e.detail, null, 1))) : "") },
        ], page.events, "No event matches."));
        const last = offset + page.events.length;
        replace(pager,
          h("button", { type: "button", disabled: offset === 0,
            onclick: () => { offset = Math.max(0, offset - PAGE); view.refresh(); } }, "← Newer"),
          h("span", { class: "muted" }, page.total ? `${offset + 1}–${last} of ${page.total}` : "0 events"),
          h("button", { type: "button", disabled: last >= page.total, onclick: () => { offset += PAGE; view.refresh(); } },
            "Older →"));
      },
    };
    form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; view.refresh(); });
    return view;
  },
};
