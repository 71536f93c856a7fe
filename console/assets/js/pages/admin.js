// Administration: users (role, disable/enable). Providers are drained or cordoned on the fleet page.
import { api } from "../api.js";
import { clear, errorNotice, field, h, notice, pageTitle, toast, when } from "../ui.js";

const ROLES = ["requester", "provider", "admin"];

export function render(main, { user }) {
  if (user.role !== "admin") {
    main.append(pageTitle("Admin"), notice("Administrators only", "Your account cannot manage users. Ask an administrator if you need a different role."));
    return;
  }
  const q = h("input", { name: "q", placeholder: "name or email", id: "user-search" });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Find users" }, field("Search users", q), h("button", { class: "btn", type: "submit" }, "Search"));
  const list = h("div", { class: "table-wrap" }, h("p", { class: "loading" }, "Loading users…"));
  main.append(pageTitle("Users"), form, list, h("p", { class: "muted small" }, "Disabling a user ends their sessions: their open consoles are signed out on their next call. Providers are drained or cordoned on the Fleet page."));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });

  async function act(u, path, body, message) {
    try {
      await api(`/api/v1/auth/users/${u.user_id}/${path}`, { method: body ? "PUT" : "POST", body });
      toast(message);
      load();
    } catch (e) {
      toast(e.message, "error");
    }
  }

  async function load() {
    try {
      const data = await api(`/api/v1/auth/users?limit=200${q.value.trim() ? `&q=${encodeURIComponent(q.value.trim())}` : ""}`);
      clear(list);
      if (!data.users.length) {
        list.append(notice("No users match", "Try another name or email."));
        return;
      }
      list.append(
        h("table", { class: "grid", id: "users" },
          h("caption", { class: "sr-only" }, "Users"),
          h("thead", {}, h("tr", {}, ["User", "Email", "Role", "Status", "Created", ""].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, data.users.map((u) => {
            const self = u.user_id === user.user_id;
            const role = h("select", { "aria-label": `Role of ${u.username}`, disabled: self }, ROLES.map((r) => h("option", { value: r, selected: r === u.role }, r)));
            role.addEventListener("change", () => act(u, "role", { role: role.value }, `${u.username} is now ${role.value}.`));
            return h("tr", { "data-username": u.username },
              h("td", {}, h("strong", {}, u.username)),
              h("td", {}, u.email || "—"),
              h("td", {}, role),
              h("td", {}, h("span", { class: `pill ${u.active ? "ok" : "bad"}` }, u.active ? "active" : "disabled")),
              h("td", {}, when(u.created_at)),
              h("td", {}, h("div", { class: "row-actions" }, self ? h("span", { class: "muted small" }, "you") : u.active
                ? h("button", { class: "btn small danger", type: "button", onclick: () => act(u, "disable", null, `${u.username} disabled.`) }, "Disable")
                : h("button", { class: "btn small", type: "button", onclick: () => act(u, "enable", null, `${u.username} enabled.`) }, "Enable"))));
          }))),
      );
    } catch (e) {
      if (e.status !== 401) clear(list).append(errorNotice(e, load));
    }
  }
  load();
}
