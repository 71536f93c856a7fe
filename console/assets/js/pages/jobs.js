// The jobs list: filters in the URL fragment, cursor paging, states refreshed in place.
import { api } from "../api.js";
import { ago, badge, clear, duration, errorNotice, field, h, notice, pageTitle } from "../ui.js";

const STATES = ["queued", "dispatched", "running", "completed", "failed", "cancelled", "timed_out"];
const PAGE = 25;
const POLL_MS = 2000;

function runtime(j) {
  if (!j.started_at) return "—";
  const end = j.finished_at ? new Date(j.finished_at) : new Date();
  return duration((end - new Date(j.started_at)) / 1000);
}

function gpuText(j) {
  const r = j.resources || {};
  if (!r.gpu_count) return "CPU";
  return `${r.gpu_count}× ${j.gpu_model || r.gpu_model || "any GPU"}`;
}

function row(j, showOwner) {
  return h(
    "tr",
    { "data-job-id": j.job_id },
    h("td", { class: "nowrap" }, h("a", { href: `#/jobs/${j.job_id}`, class: "job-link" }, j.name), h("div", { class: "mono muted small" }, j.job_id.slice(0, 8))),
    h("td", {}, badge(j.status), j.waiting_reason ? h("div", { class: "muted small reason" }, j.waiting_reason) : null),
    h("td", {}, j.type),
    h("td", { class: "nowrap" }, gpuText(j)),
    h("td", { class: "nowrap" }, (j.tags || []).map((t) => h("a", { class: "tag", href: `#/jobs?tag=${encodeURIComponent(t)}` }, t))),
    h("td", { class: "num" }, String(j.attempt)),
    showOwner ? h("td", { class: "mono small" }, j.owner_id.slice(0, 8)) : null,
    h("td", { title: j.created_at, class: "nowrap" }, ago(j.created_at)),
    h("td", { class: "num" }, runtime(j)),
  );
}

export function render(main, { query, user }) {
  const filters = {
    state: query.get("state") || "",
    tag: query.get("tag") || "",
    after: query.get("after") || "",
  };
  const cursors = [null]; // cursors[i] opens page i
  let page = 0;
  let timer = null;
  let stopped = false;
  let first = true;
  const showOwner = user.role === "admin";

  const stateSel = h("select", { name: "state" }, h("option", { value: "" }, "Any state"), STATES.map((s) => h("option", { value: s, selected: s === filters.state }, s.replace("_", " "))));
  const tagIn = h("input", { name: "tag", value: filters.tag, placeholder: "e.g. nightly" });
  const afterIn = h("input", { name: "after", type: "date", value: filters.after });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter jobs" },
    field("State", stateSel),
    field("Tag", tagIn),
    field("Created after", afterIn),
    h("button", { class: "btn", type: "submit" }, "Apply"),
    h("a", { class: "btn ghost", href: "#/jobs" }, "Clear"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (stateSel.value) q.set("state", stateSel.value);
    if (tagIn.value.trim()) q.set("tag", tagIn.value.trim());
    if (afterIn.value) q.set("after", afterIn.value);
    location.hash = `#/jobs${q.toString() ? `?${q}` : ""}`;
  });

  const body = h("tbody");
  const table = h(
    "table",
    { class: "grid", id: "jobs-table" },
    h("caption", { class: "sr-only" }, "Your jobs, newest first"),
    h("thead", {}, h("tr", {}, ["Name", "State", "Type", "Resources", "Tags", "Attempt", showOwner ? "Owner" : null, "Created", "Run time"].filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
    body,
  );
  const status = h("p", { class: "muted small", role: "status", "aria-live": "polite" });
  const prev = h("button", { class: "btn", type: "button", disabled: true }, "← Newer");
  const next = h("button", { class: "btn", type: "button", disabled: true }, "Older →");
  const pageNo = h("span", { class: "muted" });
  const content = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading jobs…"));

  main.append(
    pageTitle("Jobs", h("a", { class: "btn primary", href: "#/submit" }, "New job")),
    form,
    content,
    h("div", { class: "pager" }, prev, pageNo, next, status),
  );

  function params() {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (filters.state) q.set("state", filters.state);
    if (filters.tag) q.set("tag", filters.tag);
    if (filters.after) q.set("created_after", `${filters.after}T00:00:00Z`);
    if (cursors[page]) q.set("cursor", cursors[page]);
    return q;
  }

  async function load() {
    clearTimeout(timer);
    if (!first && document.hidden) {
      timer = setTimeout(load, POLL_MS); // a background tab does not poll the API
      return;
    }
    try {
      const data = await api(`/api/v1/jobs?${params()}`);
      if (stopped) return;
      cursors[page + 1] = data.next_cursor;
      clear(content);
      if (data.jobs.length === 0) {
        content.append(
          filters.state || filters.tag || filters.after
            ? notice("No jobs match", "Nothing matches these filters. Clear them to see every job.", h("a", { class: "btn", href: "#/jobs" }, "Clear filters"))
            : notice("No jobs yet", "Submit your first job: a script or a container, on a GPU or a CPU.", h("a", { class: "btn primary", href: "#/submit" }, "Submit a job")),
        );
      } else {
        clear(body).append(...data.jobs.map((j) => row(j, showOwner)));
        content.append(table);
      }
      prev.disabled = page === 0;
      next.disabled = !data.next_cursor;
      pageNo.textContent = `Page ${page + 1}`;
      status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      if (first) {
        first = false;
        performance.mark("dante:jobs-rendered");
        main.dataset.rendered = "jobs";
      }
    } catch (err) {
      if (stopped || err.status === 401) return;
      clear(content).append(errorNotice(err, load));
    }
    // Live: the page re-reads itself while shown (only the current page, 25 rows).
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  prev.addEventListener("click", () => {
    page = Math.max(0, page - 1);
    load();
  });
  next.addEventListener("click", () => {
    if (cursors[page + 1]) {
      page += 1;
      load();
    }
  });
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
