// Tasks: server-side paging and filters (GET /api/v1/tasks), each row with its split and peers.
import { api } from "../api.js";
import { badge, h, progress, replace, short, split, table } from "../ui.js";
import { deleteTask } from "./actions.js";

const PAGE = 25;

export default {
  mount(root, _args, ctx) {
    let offset = 0;
    const status = h("select", { name: "status", id: "filter-status" },
      ["", "WAITING", "RUNNING", "SUCCESS", "FAILED"].map((s) => h("option", { value: s }, s || "any status")));
    const url = h("input", { name: "url", id: "filter-url", type: "search", placeholder: "part of the URL" });
    const form = h("form", { class: "inline", role: "search" },
      h("label", {}, "Status", status), h("label", {}, "URL contains", url),
      h("button", { type: "submit", class: "primary" }, "Filter"));
    const list = h("div");
    const pager = h("div", { class: "pager" });
    replace(root, h("h2", {}, "Tasks"), form, list, pager);
    const view = {
      async refresh() {
        const page = await api("/api/v1/tasks", { query: { status: status.value, url: url.value, limit: PAGE, offset } });
        replace(list, table([
          { title: "URL", class: "url", cell: (t) => [h("a", { href: `#/task/${t.ID}` }, t.taskURL || t.rawURL || t.ID),
            h("div", { class: "muted mono" }, short(t.ID, 16))] },
          { title: "Status", cell: (t) => badge(t.cdnStatus) },
          { title: "Seeding", cell: (t) => progress(t.progress.percent) },
          { title: "Peers running / done", class: "num", cell: (t) => `${t.peersRunning} / ${t.peersDone}` },
          { title: "Bytes by source", cell: (t) => split(t.traffic) },
          { title: "", cell: (t) => h("button", { type: "button", class: "danger", "data-action": "delete",
            onclick: () => deleteTask(ctx, t.ID, t.taskURL) }, "Delete") },
        ], page.tasks.map((t) => ({ ...t, attrs: { "data-task": t.ID } })), "No task matches."));
        const last = Math.min(page.total, offset + page.tasks.length);
        replace(pager,
          h("button", { type: "button", disabled: offset === 0,
            onclick: () => { offset = Math.max(0, offset - PAGE); view.refresh(); } }, "← Newer"),
          h("span", { class: "muted" }, page.total ? `${offset + 1}–${last} of ${page.total}` : "0 tasks"),
          h("button", { type: "button", disabled: last >= page.total,
            onclick: () => { offset += PAGE; view.refresh(); } }, "Older →"));
      },
    };
    form.addEventListener("submit", (event) => { event.preventDefault(); offset = 0; view.refresh(); });
    return view;
  },
};
