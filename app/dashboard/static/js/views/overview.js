// Overview: cluster health, totals, bytes by source class, the P2P ratio and its recent history.
import { api } from "../api.js";
import { ago, badge, bytes, h, okBadge, percent, progress, replace, split, table } from "../ui.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  node.append(...children);
  return node;
}

// Per-minute bytes as stacked bars (peer, seed, source) with the P2P ratio as a line; each bar has a
// text title, and the ratio history is also given in words below the chart.
function chart(history) {
  const width = 600;
  const height = 140;
  const max = Math.max(1, ...history.map((p) => p.peer + p.seed + p.source));
  const step = width / Math.max(1, history.length);
  const bars = [];
  const line = [];
  history.forEach((p, i) => {
    let y = height;
    for (const cls of ["source", "seed", "peer"]) {
      const hgt = (p[cls] / max) * (height - 10);
      y -= hgt;
      if (hgt > 0) bars.push(svg("rect", { class: cls, x: i * step + 1, y, width: Math.max(1, step - 2), height: hgt }));
    }
    const total = p.peer + p.seed + p.source;
    const when = new Date(p.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    bars.push(svg("rect", { x: i * step, y: 0, width: step, height, fill: "transparent" },
      svg("title", {}, `${when}: peer ${bytes(p.peer)}, seed ${bytes(p.seed)}, source ${bytes(p.source)}`)));
    if (total) line.push(`${i * step + step / 2},${height - (p.peer / total) * (height - 10)}`);
  });
  return svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img",
    "aria-label": "Bytes per minute by source class, with the P2P ratio" }, ...bars,
  svg("polyline", { points: line.join(" ") }));
}

function card(label, value, extra, attrs = {}) {
  return h("div", { class: "card", ...attrs }, h("div", { class: "label" }, label), h("div", { class: "big" }, value),
    extra);
}

export default {
  mount(root) {
    const cards = h("div", { class: "cards" });
    const trafficBox = h("div", { class: "card" });
    const health = h("div");
    replace(root, h("h2", {}, "Overview"), cards, h("h2", {}, "Traffic by source"), trafficBox,
      h("h2", {}, "Cluster health"), health);
    return {
      async refresh() {
        const o = await api("/api/v1/overview", { query: { minutes: 15 } });
        const t = o.traffic;
        const statuses = Object.entries(o.totals.tasksByStatus).map(([s, n]) => `${s} ${n}`).join(" · ");
        replace(cards,
          card("Tasks", o.totals.tasks, h("div", { class: "muted" }, `${o.totals.activeTasks} active in ${t.minutes} min`,
            statuses ? ` · ${statuses}` : "")),
          card("Peers", o.totals.peers, h("div", { class: "muted" }, "registrations kept")),
          card(`P2P ratio (${t.minutes} min)`, percent(t.p2pRatio),
            h("div", { class: "muted" }, "share of bytes from other peers"), { id: "p2p-ratio" }),
          card(`Bytes in ${t.minutes} min`, bytes(t.window.peer + t.window.seed + t.window.source), split(t.window),
            { id: "traffic-window" }),
          card("Bytes since start", bytes(t.total.peer + t.total.seed + t.total.source), split(t.total),
            { id: "traffic-total" }),
          card("Seeds running", o.cluster.workers.runningSeeds, h("div", { class: "muted" }, o.cluster.workers.mode)));
        const ratios = t.history.filter((p) => p.peer + p.seed + p.source > 0)
          .map((p) => `${new Date(p.start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })} `
            + `${percent(p.peer / (p.peer + p.seed + p.source))}`);
        replace(trafficBox, chart(t.history),
          h("div", { class: "legend" }, h("span", {}, h("i", { class: "peer" }), "from peers"),
            h("span", {}, h("i", { class: "seed" }), "from the seed cache"),
            h("span", {}, h("i", { class: "source" }), "from source (dfget 1.0.x reports)"),
            h("span", {}, "— line: P2P ratio")),
          h("p", { class: "muted" }, ratios.length ? `P2P ratio by minute: ${ratios.join(", ")}` : "No traffic yet."));
        const ages = Object.fromEntries(o.replicaAges.map((r) => [r.id, r.heartbeatAgeSeconds]));
        const c = o.cluster;
        const disk = c.seedCache;
        const used = disk.totalBytes ? ((disk.totalBytes - disk.freeBytes) * 100) / disk.totalBytes : null;
        replace(health,
          h("h3", {}, `Replicas (${c.replicas.length})`),
          table([
            { title: "Replica", cell: (r) => [r.id, r.self ? h("span", { class: "muted" }, " (this page's)") : ""] },
            { title: "Version", cell: (r) => r.version },
            { title: "Heartbeat", cell: (r) => badge(ages[r.id] < 15 ? "ok" : "down", ago(ages[r.id])) },
            { title: "Address", class: "hide-narrow", cell: (r) => `${r.advertiseIp}:${r.port} / pieces :${r.downloadPort}` },
          ], c.replicas, "No live replica"),
          h("h3", {}, "Services"),
          table([
            { title: "Service", cell: (s) => s.name },
            { title: "State", cell: (s) => s.state },
            { title: "Detail", cell: (s) => s.detail },
          ], [
            { name: "Seed workers", state: okBadge(c.workers.ok),
              detail: `${c.workers.mode}${c.workers.workers.length ? `: ${c.workers.workers.join(", ")}` : ""}`
                + (c.workers.error ? ` — ${c.workers.error}` : "") },
            { name: "Redis", state: okBadge(c.redis.ok),
              detail: c.redis.ok ? `${c.redis.latencyMs} ms, ${c.redis.usedMemoryHuman || "?"} used` : c.redis.error },
            { name: "Audit database", state: badge(c.database.status),
              detail: [c.database.url, c.database.latencyMs !== undefined ? ` ${c.database.latencyMs} ms` : "",
                c.database.error ? ` — ${c.database.error}` : ""] },
            { name: "Seed cache", state: progress(used, used === null ? "?" : `${used.toFixed(0)} % full`),
              detail: `${bytes(disk.usedBytes)} in seed files, ${bytes(disk.freeBytes)} free of ${bytes(disk.totalBytes)}` },
          ]),
          h("h3", {}, "Limits in force"),
          h("p", {}, `downLink ${o.limits.downLinkKiB ? `${o.limits.downLinkKiB} KiB/s` : "none"} · seed upload `
            + `${o.limits.seedUploadKiBps ? `${o.limits.seedUploadKiBps} KiB/s` : "unlimited"}`
            + ` · PeerDownLimit ${o.limits.peerDownLimit} · PeerUpLimit ${o.limits.peerUpLimit}`
            + ` · CDN load ${o.limits.cdnLoadLimit} `, h("a", { href: "#/limits" }, "change")));
      },
    };
  },
};
