// Usage: run time, GPU-hours and cost per day (an SVG chart), per job, and per host for providers.
import { api } from "../api.js";
import { clear, duration, errorNotice, h, money, notice, pageTitle, svg, when } from "../ui.js";

const DAYS = 14;

function days() {
  const out = [];
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  for (let i = DAYS - 1; i >= 0; i--) out.push(new Date(today.getTime() - i * 86400000));
  return out;
}

function chart(records) {
  const buckets = days().map((d) => ({ day: d, hours: 0, gpuHours: 0, cost: 0 }));
  const start = buckets[0].day.getTime();
  for (const r of records) {
    const i = Math.floor((new Date(r.ended_at).getTime() - start) / 86400000);
    if (i < 0 || i >= buckets.length) continue;
    buckets[i].hours += r.seconds / 3600;
    buckets[i].gpuHours += r.gpu_seconds / 3600;
    buckets[i].cost += r.cost;
  }
  const W = 1100;
  const H = 260;
  const pad = { l: 56, r: 8, t: 12, b: 30 };
  const peak = Math.max(...buckets.map((b) => Math.max(b.hours, b.gpuHours)));
  // Short jobs are charted in minutes: an axis of 0.00 h ticks says nothing.
  const unit = peak < 1 ? { name: "minutes", f: 60 } : { name: "hours", f: 1 };
  for (const b of buckets) {
    b.hours *= unit.f;
    b.gpuHours *= unit.f;
  }
  const max = Math.max(unit.f === 60 ? 1 : 0.1, peak * unit.f) * 1.1;
  const bw = (W - pad.l - pad.r) / buckets.length;
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  const g = svg("g");
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    g.append(svg("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: "gridline" }), svg("text", { x: pad.l - 8, y: y(v) + 4, class: "axis", "text-anchor": "end" }, v < 10 ? v.toFixed(1) : v.toFixed(0)));
  }
  buckets.forEach((b, i) => {
    const x = pad.l + i * bw;
    const label = b.day.toLocaleDateString(undefined, { month: "short", day: "numeric" });
    const tip = `${label}: ${b.hours.toFixed(2)} ${unit.name} run, ${b.gpuHours.toFixed(2)} GPU-${unit.name}, ${money(b.cost)}`;
    g.append(
      svg("rect", { x: x + bw * 0.15, y: y(b.hours), width: bw * 0.35, height: H - pad.b - y(b.hours), class: "bar run" }, svg("title", {}, tip)),
      svg("rect", { x: x + bw * 0.5, y: y(b.gpuHours), width: bw * 0.35, height: H - pad.b - y(b.gpuHours), class: "bar gpu" }, svg("title", {}, tip)),
    );
    g.append(svg("text", { x: x + bw / 2, y: H - 8, class: "axis", "text-anchor": "middle" }, label));
  });
  const total = buckets.reduce((a, b) => a + b.hours, 0);
  g.append(svg("text", { x: 12, y: pad.t + (H - pad.b - pad.t) / 2, class: "axis", transform: `rotate(-90 12 ${pad.t + (H - pad.b - pad.t) / 2})`, "text-anchor": "middle" }, unit.name));
  return h(
    "figure",
    { class: "chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `Run time per day over the last ${DAYS} days: ${total.toFixed(2)} ${unit.name} in all` }, g),
    h("figcaption", {}, h("span", { class: "key run" }), `Run ${unit.name} `, h("span", { class: "key gpu" }), `GPU-${unit.name}, per day (last ${DAYS} days)`),
  );
}

function byHost(records) {
  const hosts = new Map();
  for (const r of records) {
    const e = hosts.get(r.provider_id) || { provider_id: r.provider_id, jobs: 0, gpuHours: 0, hours: 0, earned: 0 };
    e.jobs += 1;
    e.hours += r.seconds / 3600;
    e.gpuHours += r.gpu_seconds / 3600;
    e.earned += r.cost;
    hosts.set(r.provider_id, e);
  }
  return [...hosts.values()];
}

function card(title, heads, rows) {
  const table = h(
    "table",
    { class: "grid" },
    h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows),
  );
  return h("section", { class: "card" }, h("h2", {}, title), h("div", { class: "table-wrap" }, table));
}

export function render(main) {
  const body = h("div", {}, h("p", { class: "loading" }, "Loading usage…"));
  main.append(pageTitle("Usage"), body);
  let stopped = false;

  async function load() {
    try {
      const u = await api("/api/v1/usage?records=1000");
      if (stopped) return;
      const t = u.totals;
      const earning = u.scope === "provider";
      clear(body).append(
        h("div", { class: "stats" },
          h("div", { class: "stat" }, h("span", {}, String(t.jobs)), "metered attempts"),
          h("div", { class: "stat" }, h("span", {}, (t.seconds / 3600).toFixed(2)), "run hours"),
          h("div", { class: "stat" }, h("span", {}, (t.gpu_seconds / 3600).toFixed(2)), "GPU-hours"),
          h("div", { class: "stat" }, h("span", {}, money(t.cost)), earning ? "earned" : u.scope === "all" ? "billed in all" : "cost")),
      );
      if (!u.records.length) {
        body.append(notice("No usage yet", earning ? "Usage appears when jobs run on your hosts." : "Usage is metered when a job attempt ends. Submit a job to see it here.", earning ? null : h("a", { class: "btn primary", href: "#/submit" }, "Submit a job")));
        return;
      }
      body.append(h("section", { class: "card" }, h("h2", {}, "Over time"), chart(u.records)));
      if (earning) {
        const hostRows = byHost(u.records).map((e) =>
          h("tr", {},
            h("td", {}, h("code", {}, e.provider_id.slice(0, 8))),
            h("td", { class: "num" }, String(e.jobs)),
            h("td", { class: "num" }, e.hours.toFixed(2)),
            h("td", { class: "num" }, e.gpuHours.toFixed(2)),
            h("td", { class: "num" }, money(e.earned))),
        );
        body.append(card("Earnings per host", ["Provider", "Attempts", "Run hours", "GPU-hours", "Earned"], hostRows));
      }
      const jobRows = u.records.map((r) =>
        h("tr", {},
          h("td", {}, h("a", { href: `#/jobs/${r.job_id}` }, h("code", {}, r.job_id.slice(0, 8)))),
          h("td", { class: "num" }, String(r.attempt)),
          h("td", {}, r.state),
          h("td", {}, r.gpu_count ? `${r.gpu_count}× ${r.gpu_model || "GPU"}` : "CPU"),
          h("td", {}, when(r.ended_at)),
          h("td", { class: "num" }, duration(r.seconds)),
          h("td", { class: "num" }, (r.gpu_seconds / 3600).toFixed(3)),
          h("td", { class: "num" }, money(r.cost))),
      );
      const heads = ["Job", "Attempt", "State", "GPU", "Ended", "Run time", "GPU-hours", earning ? "Earned" : "Cost"];
      body.append(card("Per job", heads, jobRows));
    } catch (e) {
      if (!stopped && e.status !== 401) clear(body).append(errorNotice(e, load));
    }
  }
  load();
  return () => {
    stopped = true;
  };
}
