// One job: spec, event timeline, live logs, artifacts, cancel and rerun.
//
// Live logs: EventSource cannot send an Authorization header (and the API takes no cookie), so
// the SSE stream is read with fetch() and a ReadableStream reader, parsed here.
import { api } from "../api.js";
import { setDraft } from "../draft.js";
import { TERMINAL, badge, clear, errorNotice, h, notice, pageTitle, saveBlob, toast, when } from "../ui.js";

const POLL_MS = 1500;

// Rows whose value is undefined are left out (an empty list says nothing worth a line).
function dl(pairs) {
  const rows = pairs.filter(([, v]) => v !== undefined);
  return h("dl", { class: "kv" }, rows.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v ?? "—"))));
}

// The submit form, filled in with this job's spec (environment values are never shown back).
function rerun(j) {
  setDraft({
    type: j.type,
    name: j.name,
    params: j.params || {},
    resources: j.resources || {},
    priority: j.priority,
    max_retries: j.max_retries,
    timeout_seconds: j.timeout_seconds,
    max_price_per_hour: j.max_price_per_hour,
    tags: j.tags,
    inputs: j.inputs,
    outputs: j.outputs,
  });
  location.hash = "#/submit";
}

function specCard(j) {
  const p = j.params || {};
  const rows = [];
  if (j.type === "script") {
    rows.push(["Interpreter", p.script_interpreter || "bash"]);
  } else {
    rows.push(["Image", h("code", {}, p.docker_image || "—")]);
    if (p.docker_command) rows.push(["Command", h("code", {}, [].concat(p.docker_command).join(" "))]);
    const names = Object.keys(p.docker_env_vars || {});
    if (names.length) rows.push(["Container env", `${names.join(", ")} (values hidden)`]);
  }
  if (j.env_names?.length) rows.push(["Environment", `${j.env_names.join(", ")} (values hidden)`]);
  rows.push(["Timeout", j.timeout_seconds ? `${j.timeout_seconds} s` : "none"]);
  if (j.max_price_per_hour !== null && j.max_price_per_hour !== undefined) rows.push(["Price cap", `$${j.max_price_per_hour}/h`]);
  return h(
    "section",
    { class: "card", "aria-labelledby": "spec-h" },
    h("h2", { id: "spec-h" }, "Spec"),
    dl(rows),
    j.type === "script" && p.script_content ? h("pre", { class: "code", id: "spec-script", tabindex: 0, "aria-label": "Script" }, p.script_content) : null,
  );
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
  const spec = h("div");
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
      h("section", { class: "card", "aria-labelledby": "art-h" }, h("h2", { id: "art-h" }, "Artifacts"), artifacts),
      spec),
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
        h("button", { class: "btn", type: "button", id: "rerun", onclick: () => rerun(j) }, "Rerun…"),
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
    if (!spec.firstChild) spec.append(specCard(j)); // the spec never changes
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
