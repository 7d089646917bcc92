// Peers: the registrations with their tasks and the bytes they served to other peers.
import { api } from "../api.js";
import { badge, bytes, h, replace, short, table } from "../ui.js";

const PAGE = 50;

export default {
  mount(root) {
    let page = 0;
    const list = h("div");
    const pager = h("div", { class: "pager" });
    replace(root, h("h2", {}, "Peers"), list, pager);
    const view = {
      async refresh() {
        const peers = await api("/api/v1/peers", { query: { pageNum: page, pageSize: PAGE, sortDirect: "DESC" } });
        replace(list, table([
          { title: "Host", cell: (p) => [p.hostName, p.seedCache ? h("span", { class: "muted" }, " (seed cache)") : ""] },
          { title: "Address", cell: (p) => `${p.IP}:${p.port}` },
          { title: "Version", class: "hide-narrow", cell: (p) => p.version || "" },
          { title: "Tasks", cell: (p) => p.tasks.map((t) => h("div", {},
            h("a", { href: `#/task/${t.taskId}`, class: "mono" }, short(t.taskId)), " ",
            t.down ? badge("down", "gone down") : badge(t.status))) },
          { title: "Served to others", class: "num", cell: (p) => `${bytes(p.servedBytes)} (${p.servedPieces} pieces)` },
          { title: "Registered", class: "hide-narrow", cell: (p) => new Date(p.created).toLocaleString() },
        ], peers, "No peer registered."));
        replace(pager,
          h("button", { type: "button", disabled: page === 0, onclick: () => { page -= 1; view.refresh(); } }, "← Newer"),
          h("span", { class: "muted" }, `page ${page + 1}`),
          h("button", { type: "button", disabled: peers.length < PAGE, onclick: () => { page += 1; view.refresh(); } },
            "Older →"));
      },
    };
    return view;
  },
};
