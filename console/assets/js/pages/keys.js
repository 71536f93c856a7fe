// Provider API keys: one per host, shown once at creation, revocable.
import { api } from "../api.js";
import { clear, errorNotice, field, h, notice, pageTitle, toast, when } from "../ui.js";

export function render(main, { user }) {
  if (user.role !== "provider") {
    main.append(pageTitle("API keys"), notice("Provider accounts only", "API keys let a provider's daemon act for one host. Sign up as a provider to offer GPUs."));
    return;
  }
  const name = h("input", { name: "key-name", required: true, maxlength: 64, placeholder: "gpu-node-01" });
  const form = h("form", { class: "filters", id: "key-form" }, field("Host name for the key", name), h("button", { class: "btn primary", type: "submit" }, "Create key"));
  const fresh = h("div", { id: "new-key", role: "status", "aria-live": "polite" });
  const list = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading keys…"));
  main.append(pageTitle("API keys"), form, fresh, list);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const key = await api("/api/v1/auth/api-keys", { method: "POST", body: { name: name.value.trim() } });
      // Shown once: the platform keeps only its hash.
      clear(fresh).append(
        h("section", { class: "card" },
          h("h2", {}, `Key for ${key.name}`),
          h("p", {}, "Copy it now: it is not shown again. Start the daemon on that host with it:"),
          h("pre", { class: "log", id: "new-key-value" }, `DANTE_DAEMON_GATEWAY_URL=${location.origin} DANTE_DAEMON_API_KEY=${key.api_key} dante-provider run`)),
      );
      name.value = "";
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  });

  async function revoke(k) {
    if (!confirm(`Revoke the key for ${k.name}? Its daemon stops being able to act.`)) return;
    try {
      await api(`/api/v1/auth/api-keys/${k.key_id}`, { method: "DELETE" });
      toast(`Key ${k.prefix}… revoked.`);
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function load() {
    try {
      const keys = await api("/api/v1/auth/api-keys");
      clear(list);
      if (!keys.length) {
        list.append(notice("No keys yet", "Create one key per host above; the daemon on that host uses it to register and take tasks."));
        return;
      }
      list.append(
        h("table", { class: "grid", id: "keys" },
          h("caption", { class: "sr-only" }, "Your API keys"),
          h("thead", {}, h("tr", {}, ["Name", "Key", "Provider", "Created", "Last used", "Status", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, keys.map((k) =>
            h("tr", { "data-key-id": k.key_id },
              h("td", {}, h("strong", {}, k.name)),
              h("td", { class: "mono" }, `${k.prefix}…`),
              h("td", { class: "mono small" }, k.provider_id.slice(0, 8)),
              h("td", {}, when(k.created_at)),
              h("td", {}, when(k.last_used_at)),
              h("td", {}, h("span", { class: `pill ${k.revoked_at ? "bad" : "ok"}` }, k.revoked_at ? "revoked" : "active")),
              h("td", {}, k.revoked_at ? null : h("div", { class: "row-actions" }, h("button", { class: "btn small danger", type: "button", onclick: () => revoke(k) }, "Revoke"))))))),
      );
    } catch (e) {
      if (e.status !== 401) clear(list).append(errorNotice(e, load));
    }
  }
  load();
}
