// One task: status, seeding, its byte split, the piece map, its peers, errors, its limit and audit events.
import { api, ApiError } from "../api.js";
import { badge, bytes, confirmAction, h, progress, replace, short, split, table } from "../ui.js";
import { deleteTask } from "./actions.js";

// Holder count -> shade class (the count itself is printed in the cell).
const level = (n) => (n <= 0 ? "l0" : n === 1 ? "l1" : n <= 4 ? "l2" : "l3");

function pieceMap(map) {
  const cells = map.holders.map((n, i) => h("div", {
    class: `cell ${level(n)}${map.seeded[i] ? "" : " unseeded"}`, "data-holders": n, "data-seeded": String(map.seeded[i]),
    title: `piece ${map.offset + i}: ${n} peer${n === 1 ? "" : "s"} hold it; ${map.seeded[i] ? "in" : "not yet in"} the seed cache`,
  }, map.seeded[i] ? String(n) : "·"));
  const full = map.holders.filter((n) => n > 0).length;
  return [h("p", { class: "muted" }, `${map.pieceTotal} pieces · ${map.seeded.filter(Boolean).length} in the seed cache`
    + ` · ${full} held by peers. Each cell: how many peers hold the piece (· = not seeded yet).`),
  h("div", { class: "piece-map", id: "piece-map", role: "img", "aria-label": `piece map of ${map.pieceTotal} pieces` },
    cells)];
}

export default {
  mount(root, [id], ctx) {
    const head = h("div");
    const limitInput = h("input", { id: "task-downlink", type: "number", min: 0, step: 1, placeholder: "KiB/s" });
    const limitForm = h("form", { class: "inline", id: "task-limit-form" },
      h("label", {}, "This task's downLink (KiB/s, empty = the cluster's)", limitInput),
      h("button", { type: "submit", class: "primary" }, "Apply"));
    const limitNow = h("p", { class: "muted", id: "task-downlink-now" });
    const mapBox = h("div");
    const peersBox = h("div");
    const eventsBox = h("div");
    replace(root, h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")), head, h("h3", {}, "Piece map"), mapBox,
      h("h3", {}, "Peers"), peersBox, h("h3", {}, "Limit"), limitNow, limitForm, h("h3", {}, "Audit events"), eventsBox);
    limitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const raw = limitInput.value.trim();
      const value = raw === "" ? null : Number(raw);
      const ok = await confirmAction("Change this task's downLink?",
        value === null ? "Back to the cluster's downLink." : `Its next piece tasks carry downLink ${value} KiB/s.`);
      if (ok) await ctx.act("Task limit changed.", () => api(`/api/v1/tasks/${id}/limits`, { method: "PUT",
        body: { downLinkKiB: value } }));
    });
    return {
      async refresh() {
        const [t, swarm, limit] = await Promise.all([api(`/api/v1/tasks/${id}`),
          api(`/api/v1/tasks/${id}/swarm`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
          api(`/api/v1/tasks/${id}/limits`).catch((e) => (e.status === 404 ? null : Promise.reject(e)))]);
        const p = t.progress;
        replace(head,
          h("h2", {}, "Task ", h("span", { class: "mono" }, short(t.ID, 20)), " ", badge(t.cdnStatus)),
          h("p", { class: "url" }, t.taskURL || t.rawURL || ""),
          h("div", { class: "cards" },
            h("div", { class: "card" }, h("div", { class: "label" }, "Seeding"), progress(p.percent),
              h("div", { class: "muted" }, `${bytes(p.bytes)} of ${bytes(t.httpFileLength)} · ${p.piecesSeeded}`
                + ` pieces${p.rateBytesPerSecond ? ` · ${bytes(p.rateBytesPerSecond)}/s` : ""}`)),
            h("div", { class: "card", id: "task-split" }, h("div", { class: "label" }, "Bytes clients received"),
              split(t.traffic)),
            h("div", { class: "card" }, h("div", { class: "label" }, "Peers running / done"),
              h("div", { class: "big" }, `${t.peersRunning} / ${t.peersDone}`),
              h("div", { class: "muted" }, `${t.peers} registered`)),
            h("div", { class: "card" }, h("div", { class: "label" }, "Actions"),
              h("button", { type: "button", class: "danger", "data-action": "delete",
                onclick: async () => { if (await deleteTask(ctx, t.ID, t.taskURL)) ctx.navigate("#/tasks"); } },
              "Delete task…"))),
          p.error ? h("p", { class: "error-text", id: "seed-error" }, `✖ Source error (${p.reason || "seed"}): ${p.error}`) : null,
          t.sourceRefusal ? h("p", { class: "error-text", id: "refusal" }, `⛔ Source policy refused ${t.sourceRefusal.count}`
            + ` registration(s) (${t.sourceRefusal.reason}): ${t.sourceRefusal.message}`) : null);
        replace(mapBox, swarm ? pieceMap(swarm.pieceMap) : h("p", { class: "muted" }, "No pieces (task not created)."));
        replace(peersBox, table([
          { title: "Peer", cell: (x) => [x.hostName || "", h("div", { class: "muted mono" }, x.cid)] },
          { title: "Address", class: "hide-narrow", cell: (x) => `${x.ip}:${x.port ?? "–"}` },
          { title: "Version", class: "hide-narrow", cell: (x) => x.version || "" },
          { title: "State", cell: (x) => (x.down ? badge("down", "gone down") : badge(x.status)) },
          { title: "Progress", cell: (x) => progress(x.percent, `${x.piecesDone} pieces${x.percent !== undefined ? ` · ${x.percent} %` : ""}`) },
          { title: "Served", class: "num", cell: (x) => `${bytes(x.servedBytes)} (${x.servedPieces} pieces)` },
          { title: "Errors", class: "num hide-narrow", cell: (x) => `${x.clientErrors} / ${x.servingErrors}` },
        ], swarm ? swarm.peers : [], "No peer registered."));
        limitNow.textContent = limit ? `Piece tasks carry downLink ${limit.downLinkKiB} KiB/s`
          + (limit.override !== undefined ? " (this task's own)" : " (the cluster's)") : "";
        let events;
        try {
          events = (await api("/api/v1/audit", { query: { task_id: id, limit: 50 } })).events;
        } catch (err) {
          if (!(err instanceof ApiError) || err.isAuth) throw err;
          replace(eventsBox, h("p", { class: "error-text" }, `Audit log unavailable: ${err.message}`));
          return;
        }
        replace(eventsBox, table([
          { title: "When", cell: (e) => new Date(e.at).toLocaleString() },
          { title: "Actor", cell: (e) => e.actor },
          { title: "Action", cell: (e) => e.action },
          { title: "Outcome", cell: (e) => badge(e.outcome, e.outcome) },
          { title: "Target", class: "url hide-narrow", cell: (e) => e.target },
        ], events, "No event stored yet."));
      },
    };
  },
};
