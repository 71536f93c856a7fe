// Storage: browse by folder, upload with progress, download, delete; one's own namespace only.
import { api, bearer } from "../api.js";
import { bytes, clear, errorNotice, field, h, notice, pageTitle, saveBlob, svg, toast, when } from "../ui.js";

const folderIcon = () =>
  svg("svg", { viewBox: "0 0 20 16", width: 18, height: 14, class: "icon", "aria-hidden": "true" },
    svg("path", { d: "M1 2.5A1.5 1.5 0 0 1 2.5 1h4.4l2 2h8.6A1.5 1.5 0 0 1 19 4.5v9a1.5 1.5 0 0 1-1.5 1.5h-15A1.5 1.5 0 0 1 1 13.5z" }));

const enc = (key) => key.split("/").map(encodeURIComponent).join("/");

// XMLHttpRequest, not fetch: fetch has no upload progress events.
function upload(key, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/api/v1/storage/objects/${enc(key)}`);
    xhr.setRequestHeader("authorization", bearer());
    xhr.setRequestHeader("content-type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve();
      else {
        let detail = xhr.statusText;
        try {
          detail = JSON.parse(xhr.responseText).detail || detail;
        } catch {
          /* not JSON */
        }
        reject(new Error(`${xhr.status}: ${detail}`));
      }
    });
    xhr.addEventListener("error", () => reject(new Error("network error")));
    xhr.send(file);
  });
}

export function render(main, { query }) {
  let prefix = query.get("prefix") || "";
  const crumbs = h("nav", { class: "crumbs", "aria-label": "Current folder" });
  const list = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading objects…"));
  const fileIn = h("input", { type: "file", id: "upload-file", multiple: true });
  const folderIn = h("input", { id: "upload-prefix", placeholder: "datasets/", value: prefix });
  const progress = h("progress", { max: 1, value: 0, id: "upload-progress", hidden: true, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "muted small", role: "status", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "filters", id: "upload-form" },
    field("Folder", folderIn),
    field("Files", fileIn),
    h("button", { class: "btn primary", type: "submit" }, "Upload"),
    h("div", { class: "progress-row" }, progress, progressText),
  );
  main.append(pageTitle("Storage"), h("p", { class: "muted" }, "Your own namespace: jobs read their inputs from here and write their outputs here."), form, crumbs, list);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const files = [...fileIn.files];
    if (!files.length) return toast("Choose a file first.", "error");
    let folder = folderIn.value.trim().replace(/^\/+/, "");
    if (folder && !folder.endsWith("/")) folder += "/";
    progress.hidden = false;
    try {
      for (const [n, f] of files.entries()) {
        await upload(folder + f.name, f, (p) => {
          progress.value = (n + p) / files.length;
          progressText.textContent = `Uploading ${f.name}: ${Math.round(p * 100)}%`;
        });
      }
      progress.value = 1;
      progressText.textContent = `Uploaded ${files.length} file${files.length === 1 ? "" : "s"}.`;
      fileIn.value = "";
      prefix = folder;
      load();
    } catch (e) {
      progressText.textContent = `Upload failed: ${e.message}`;
    }
  });

  function go(p) {
    prefix = p;
    folderIn.value = p;
    load();
  }

  async function load() {
    clear(crumbs).append(h("button", { class: "linkish", type: "button", onclick: () => go("") }, "home"));
    let acc = "";
    for (const part of prefix.split("/").filter(Boolean)) {
      acc += `${part}/`;
      const target = acc;
      crumbs.append(" / ", h("button", { class: "linkish", type: "button", onclick: () => go(target) }, part));
    }
    try {
      const data = await api(`/api/v1/storage/objects?limit=1000&prefix=${encodeURIComponent(prefix)}`);
      // Folders are the next path segment under the prefix (the API lists keys flat).
      const folders = new Map();
      const files = [];
      for (const o of data.objects) {
        const rest = o.key.slice(prefix.length);
        const slash = rest.indexOf("/");
        if (slash >= 0) folders.set(rest.slice(0, slash + 1), (folders.get(rest.slice(0, slash + 1)) || 0) + 1);
        else files.push(o);
      }
      clear(list);
      if (!folders.size && !files.length) {
        list.append(notice("Nothing here yet", "Upload a file above, or name an output in a job: it lands here when the job ends."));
        return;
      }
      list.append(
        h("table", { class: "grid", id: "objects" },
          h("caption", { class: "sr-only" }, `Objects under ${prefix || "the top folder"}`),
          h("thead", {}, h("tr", {}, ["Name", "Size", "Modified", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {},
            [...folders].map(([name, n]) => h("tr", {}, h("td", {}, h("button", { class: "linkish", type: "button", onclick: () => go(prefix + name) }, folderIcon(), ` ${name}`)), h("td", { class: "muted" }, `${n} object${n === 1 ? "" : "s"}`), h("td"), h("td"))),
            files.map((o) => h("tr", { "data-key": o.key },
              h("td", { class: "mono" }, o.key.slice(prefix.length)),
              h("td", { class: "num" }, bytes(o.size)),
              h("td", {}, when(o.last_modified)),
              h("td", {}, h("div", { class: "row-actions" },
                h("button", { class: "btn small", type: "button", onclick: () => download(o.key) }, "Download"),
                h("button", { class: "btn small danger", type: "button", onclick: () => remove(o.key) }, "Delete"))))))),
      );
    } catch (e) {
      if (e.status !== 401) clear(list).append(errorNotice(e, load));
    }
  }

  async function download(key) {
    try {
      const resp = await api(`/api/v1/storage/objects/${enc(key)}`, { raw: true });
      saveBlob(await resp.blob(), key.split("/").pop());
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function remove(key) {
    if (!confirm(`Delete ${key}? This cannot be undone.`)) return;
    try {
      await api(`/api/v1/storage/objects/${enc(key)}`, { method: "DELETE" });
      toast(`Deleted ${key}.`);
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  load();
}
