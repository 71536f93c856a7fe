// One job: spec, event timeline, live logs, artifacts, cancel and rerun.
//
// Live logs: EventSource cannot send an Authorization header (and the API takes no cookie), so
// the SSE stream is read with fetch() and a ReadableStream reader, parsed here.
import { api } from "../api.js";
import { TERMINAL, badge, clear, errorNotice, h, notice, pageTitle, saveBlob, toast, when } from "../ui.js";

const POLL_MS = 1500;

// Rows whose value is undefined are left out (an empty list says nothing worth a line).
function dl(pairs) {
  const rows = pairs.filter(([, v]) => v !== undefined);
  return h("dl", { class: "kv" }, rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v ?? "—"))));
}

function rerunLink(j) {
  const q = new URLSearchParams({ name: j.name, priority: String(j.priority), max_retries: String(j.max_retries) });
  const r = j.resources || {};
  if (r.gpu_count) q.set("gpu_count", String(r.gpu_count));
  if (r.gpu_model) q.set("gpu_model", r.gpu_model);
  if (j.tags?.length) q.set("tags", j.tags.join(", "));
  if (j.inputs?.length) q.set("inputs", j.inputs.join("\n"));
  if (j.outputs?.length) q.set("outputs", j.outputs.join("\n"));
  return `#/submit?${q}`;
}

// Server-sent events from a fetch body: calls onLine per data line, resolves at "end".
async function readSse(resp, onLine, signal) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done || signal.aborted) return false;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (event === "end") return true;
      if (data.length) onLine(JSON.parse(data.join("\n")));
    }
  }
}

export function render(main, { args }) {
  const [id] = args;
  const ctl = new AbortController();
  let timer = null;
  let job = null;
  let paused = false;
  let pending = [];
  let streaming = false;

  const head = h("div");
  const summary = h("section", { class: "card", "aria-labelledby": "sum-h" });
  const timeline = h("ol", { class: "timeline", id: "timeline" });
  const artifacts = h("div", { id: "artifacts" });
  const logEl = h("pre", { class: "log", id: "log", tabindex: 0, "aria-label": "Job log" });
  const logState = h("span", { class: "muted small", id: "log-state", role: "status" }, "Waiting for output…");
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const pauseBtn = h("button", { class: "btn", type: "button", id: "log-pause", "aria-pressed": "false" }, "Pause");
  const dlBtn = h("button", { class: "btn", type: "button", id: "log-download" }, "Download log");

  const body = h(
    "div",
    { class: "job-grid" },
    h("div", {},
      summary,
      h("section", { class: "card", "aria-labelledby": "log-h" },
        h("div", { class: "card-head" }, h("h2", { id: "log-h" }, "Log"),
          h("div", { class: "actions" }, h("label", { for: "log-follow", class: "check" }, follow, " Follow"), pauseBtn, dlBtn)),
        logEl, logState)),
    h("div", {},
      h("section", { class: "card", "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h" }, "Timeline"), timeline),
      h("section", { class: "card", "aria-labelledby": "art-h" }, h("h2", { id: "art-h" }, "Artifacts"), artifacts)),
  );
  main.append(head, h("p", { class: "loading" }, "Loading the job…"));

  function appendLines(lines) {
    if (paused) {
      pending.push(...lines);
      return;
    }
    logEl.append(document.createTextNode(lines.map((l) => `${l}\n`).join("")));
    if (follow.checked) logEl.scrollTop = logEl.scrollHeight;
  }

  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (!paused && pending.length) {
      const lines = pending;
      pending = [];
      appendLines(lines);
    }
  });
  dlBtn.addEventListener("click", async () => {
    try {
      const resp = await api(`/api/v1/jobs/${id}/logs`, { raw: true });
      saveBlob(await resp.blob(), `${id}.log`);
    } catch (e) {
      toast(e.message, "error");
    }
  });

  async function stream() {
    if (streaming) return;
    streaming = true;
    try {
      for (let tries = 0; !ctl.signal.aborted && tries < 20; tries++) {
        try {
          const resp = await api(`/api/v1/jobs/${id}/logs?follow=true`, { raw: true, signal: ctl.signal });
          clear(logEl); // a (re)connect replays the log from its start
          pending = [];
          logState.textContent = "Streaming live…";
          if (await readSse(resp, (line) => appendLines([line]), ctl.signal)) {
            logState.textContent = "The job has ended; this is its whole log.";
            logEl.dataset.complete = "true";
            return;
          }
        } catch (e) {
          if (ctl.signal.aborted || e.status === 401) return;
          logState.textContent = e.status === 404 ? "Waiting for the job to be stored…" : `Reconnecting: ${e.message}`;
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    } finally {
      streaming = false;
    }
  }

  function renderJob(j, events) {
    clear(head).append(
      pageTitle(
        j.name,
        badge(j.status),
        !TERMINAL.has(j.status) ? h("button", { class: "btn danger", type: "button", id: "cancel", onclick: cancel }, "Cancel") : null,
        h("a", { class: "btn", href: rerunLink(j), id: "rerun" }, "Rerun…"),
      ),
    );
    head.querySelector("h1").id = "job-title";
    const r = j.resources || {};
    clear(summary).append(
      h("h2", { id: "sum-h" }, "Summary"),
      dl([
        ["Job id", h("code", {}, j.job_id)],
        ["State", j.status],
        ["Waiting because", j.waiting_reason || undefined],
        ["Type", j.type],
        ["Attempt", `${j.attempt} of ${j.max_retries + 1}`],
        ["Resources", `${r.gpu_count ? `${r.gpu_count} GPU${r.gpu_count === 1 ? "" : "s"}${r.gpu_model ? ` (${r.gpu_model})` : ""}` : "CPU only"}${r.cpu ? `, ${r.cpu} CPU` : ""}${r.memory_mb ? `, ${r.memory_mb} MiB` : ""}`],
        ["Provider", j.provider_id ? h("code", {}, j.provider_id.slice(0, 8)) : "—"],
        ["GPUs", j.gpu_indices.length ? `${j.gpu_model || ""} #${j.gpu_indices.join(", #")}` : undefined],
        ["Priority", String(j.priority)],
        ["Tags", j.tags.length ? j.tags.join(", ") : undefined],
        ["Inputs", j.inputs.length ? j.inputs.join(", ") : undefined],
        ["Outputs", j.outputs.length ? j.outputs.join(", ") : undefined],
        ["Created", when(j.created_at)],
        ["Started", when(j.started_at)],
        ["Finished", when(j.finished_at)],
        ["Exit code", j.exit_code === null ? undefined : String(j.exit_code)],
        ["Error", j.error || undefined],
      ]),
    );
    clear(timeline).append(
      ...events.map((e) =>
        h("li", { class: `ev s-${e.to}` }, h("span", { class: "dot", "aria-hidden": "true" }),
          h("div", {}, h("strong", {}, e.from ? `${e.from} → ${e.to}` : e.to), h("div", { class: "muted small" }, `${when(e.at)} · attempt ${e.attempt}${e.cause ? ` · ${e.cause}` : ""}`))),
      ),
    );
    if (!events.length) timeline.append(h("li", { class: "muted" }, "No events yet."));
    clear(artifacts);
    if (!j.artifacts.length) {
      artifacts.append(h("p", { class: "muted" }, TERMINAL.has(j.status) ? "This job stored no artifacts." : "Outputs appear here when the job ends."));
    } else {
      artifacts.append(
        h("ul", { class: "plain" }, j.artifacts.map((a) =>
          h("li", {}, h("span", { class: "tag" }, a.kind), " ", h("code", {}, a.key), " ",
            h("button", { class: "btn small", type: "button", "data-key": a.key, onclick: () => download(a.key) }, "Download")))),
      );
    }
  }

  async function download(key) {
    try {
      const resp = await api(`/api/v1/storage/objects/${key.split("/").map(encodeURIComponent).join("/")}`, { raw: true });
      saveBlob(await resp.blob(), key.split("/").pop());
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function cancel() {
    if (!confirm("Cancel this job? Its process is killed.")) return;
    try {
      await api(`/api/v1/jobs/${id}/cancel`, { method: "POST" });
      toast("Cancellation requested.");
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  let misses = 0;
  async function load() {
    clearTimeout(timer);
    try {
      const [j, ev] = await Promise.all([api(`/api/v1/jobs/${id}`), api(`/api/v1/jobs/${id}/events`)]);
      if (ctl.signal.aborted) return;
      if (!job) {
        main.querySelector(".loading")?.remove();
        main.append(body);
        stream();
      }
      job = j;
      renderJob(j, ev.events);
      if (TERMINAL.has(j.status)) return; // one last render; nothing changes any more
    } catch (e) {
      if (ctl.signal.aborted || e.status === 401) return;
      // just submitted: the scheduler may not have stored it yet (a few ms to a second)
      if (e.status === 404 && !job && ++misses < 8) {
        timer = setTimeout(load, 500);
        return;
      }
      if (!job) {
        clear(main).append(pageTitle("Job"), e.status === 404 ? notice("Job not found", "There is no such job, or it belongs to someone else.", h("a", { class: "btn", href: "#/jobs" }, "Back to your jobs")) : errorNotice(e, load));
        return;
      }
    }
    timer = setTimeout(load, POLL_MS);
  }
  load();
  return () => {
    ctl.abort();
    clearTimeout(timer);
  };
}
