// The fleet: every provider and every GPU, with heartbeat metrics and the job on each GPU.
import { api } from "../api.js";
import { ago, clear, errorNotice, h, notice, pageTitle, toast } from "../ui.js";

const POLL_MS = 5000;

function meter(label, value, max, unit) {
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  const pct = Math.max(0, Math.min(100, (value / max) * 100));
  const bar = h("span", { class: "meter-fill" });
  bar.style.width = `${pct}%`; // CSSOM, not a style attribute: allowed by the strict CSP
  if (pct > 85) bar.classList.add("hot");
  return h("span", { class: "meter", role: "img", "aria-label": `${label} ${Math.round(value)}${unit}` },
    h("span", { class: "meter-track" }, bar), h("span", { class: "meter-text" }, `${Math.round(value)}${unit}`));
}

function heartbeatClass(iso) {
  if (!iso) return "stale";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  return s < 30 ? "fresh" : s < 120 ? "late" : "stale";
}

function gpuRows(p, busy) {
  if (!p.gpus.length) return [h("tr", {}, h("td", { colspan: 9, class: "muted" }, `No GPU: offers ${p.cpu_count} CPU${p.cpu_count === 1 ? "" : "s"} and ${Math.round(p.memory_mb / 1024)} GiB of memory to CPU jobs.`))];
  return p.gpus.map((g) => {
    const m = g.metrics || {};
    const job = busy.get(`${p.id}:${g.index}`);
    return h(
      "tr",
      {},
      h("td", { class: "num" }, `#${g.index}`),
      h("td", {}, g.name),
      h("td", { class: "num" }, `${Math.round(g.memory_total_mb / 1024)} GiB`),
      h("td", {}, h("span", { class: `pill ${g.healthy && m.healthy !== false ? "ok" : "bad"}` }, g.healthy && m.healthy !== false ? "healthy" : "unhealthy")),
      h("td", {}, job ? h("span", { class: "pill busy" }, "busy") : h("span", { class: "pill free" }, "free")),
      h("td", {}, meter("Utilisation", m.utilization_pct, 100, "%")),
      h("td", {}, m.memory_used_mb === undefined || m.memory_used_mb === null ? h("span", { class: "muted" }, "—") : meter("Memory", (m.memory_used_mb / g.memory_total_mb) * 100, 100, "%")),
      h("td", { class: "num" }, m.temperature_c === undefined || m.temperature_c === null ? "—" : `${Math.round(m.temperature_c)} °C`),
      h("td", {}, job ? h("a", { href: `#/jobs/${job.job_id}` }, job.name) : h("span", { class: "muted" }, "—")),
    );
  });
}

function providerCard(p, busy, user, reload) {
  const canManage = user.role === "admin" || p.owner_id === user.user_id;
  const setStatus = async (status) => {
    try {
      await api(`/api/v1/providers/${p.id}/status`, { method: "PUT", body: { status } });
      toast(`${p.name}: ${status}.`);
      reload();
    } catch (e) {
      toast(e.message, "error");
    }
  };
  const hb = heartbeatClass(p.last_heartbeat_at);
  return h(
    "section",
    { class: "card provider", "aria-labelledby": `p-${p.id}`, "data-provider-id": p.id },
    h("div", { class: "card-head" },
      h("div", {},
        h("h2", { id: `p-${p.id}` }, p.name, " ", h("span", { class: `pill st-${p.status}` }, p.status)),
        h("div", { class: "muted small" }, [p.hostname, p.gpus.length ? `${p.gpus.length} GPU${p.gpus.length === 1 ? "" : "s"}` : "CPU only", `${p.cpu_count} CPUs`, p.cuda_version ? `CUDA ${p.cuda_version}` : null, p.price_per_hour ? `$${p.price_per_hour.toFixed(2)}/GPU-h` : "free"].filter(Boolean).join(" · "))),
      h("div", { class: "actions" },
        h("span", { class: `hb ${hb}`, title: p.last_heartbeat_at || "never" }, "♥ ", p.last_heartbeat_at ? ago(p.last_heartbeat_at) : "no heartbeat"),
        canManage && p.status === "online" ? h("button", { class: "btn small", type: "button", onclick: () => setStatus("draining") }, "Drain") : null,
        canManage && p.status === "online" ? h("button", { class: "btn small", type: "button", onclick: () => setStatus("maintenance") }, "Cordon") : null,
        canManage && (p.status === "draining" || p.status === "maintenance") ? h("button", { class: "btn small", type: "button", onclick: () => setStatus("online") }, "Put online") : null)),
    h("div", { class: "table-wrap" },
      h("table", { class: "grid compact" },
        h("caption", { class: "sr-only" }, `GPUs of ${p.name}`),
        h("thead", {}, h("tr", {}, ["GPU", "Model", "VRAM", "Health", "State", "Utilisation", "Memory", "Temp.", "Job"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, gpuRows(p, busy)))),
  );
}

export function render(main, { user }) {
  let timer = null;
  let stopped = false;
  const summary = h("div", { class: "stats" });
  const list = h("div", { class: "fleet" }, h("p", { class: "loading" }, "Loading the fleet…"));
  main.append(pageTitle("Fleet"), summary, list);

  async function load() {
    clearTimeout(timer);
    try {
      const none = { jobs: [] };
      const [data, running, dispatched] = await Promise.all([
        api("/api/v1/providers?limit=200&count=true"),
        api("/api/v1/jobs?state=running&limit=200").catch(() => none),
        api("/api/v1/jobs?state=dispatched&limit=200").catch(() => none),
      ]);
      if (stopped) return;
      // Only jobs the caller may see are named on a GPU; others show as busy by heartbeat.
      const busy = new Map();
      for (const j of [...running.jobs, ...dispatched.jobs]) for (const i of j.gpu_indices) busy.set(`${j.provider_id}:${i}`, j);
      const gpus = data.providers.flatMap((p) => p.gpus);
      const online = data.providers.filter((p) => p.status === "online").length;
      clear(summary).append(
        h("div", { class: "stat" }, h("span", {}, String(data.total ?? data.providers.length)), "providers"),
        h("div", { class: "stat" }, h("span", {}, String(online)), "online"),
        h("div", { class: "stat" }, h("span", {}, String(gpus.length)), "GPUs"),
        h("div", { class: "stat" }, h("span", {}, String(busy.size)), "GPUs running your jobs"),
      );
      clear(list);
      if (!data.providers.length) {
        list.append(notice("No providers yet", "Start a provider daemon (dante-provider) with a provider API key; its host appears here within a heartbeat."));
      } else {
        list.append(...data.providers.map((p) => providerCard(p, busy, user, load)));
      }
      main.dataset.rendered = "fleet";
    } catch (e) {
      if (stopped || e.status === 401) return;
      clear(list).append(errorNotice(e, load));
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
