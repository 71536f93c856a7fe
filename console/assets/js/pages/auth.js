// Sign in and sign up. Self-registration offers requester or provider; never admin.
import * as api from "../api.js";
import { field, h } from "../ui.js";

const REASONS = {
  revoked:
    "Your session has ended: you were signed out elsewhere or your account was disabled. Sign in again, or ask an administrator.",
  expired: "Your session has expired. Sign in again.",
  "signed-out": "You are signed out.",
};

function shell(title, form, footer) {
  document.title = `${title} · Dante`;
  return h(
    "section",
    { class: "auth-card", "aria-labelledby": "auth-title" },
    h("div", { class: "auth-brand" }, h("img", { src: "/assets/favicon.svg", alt: "", width: 36, height: 36 }), "Dante"),
    h("h1", { id: "auth-title" }, title),
    form,
    h("p", { class: "muted" }, footer),
  );
}

function errorBox() {
  return h("p", { class: "form-error", role: "alert", hidden: true });
}

function showError(box, err) {
  box.textContent = err.message || String(err);
  box.hidden = false;
}

// Submit runs `action` with the button disabled; a failure shows in `err`, the form stays.
function onSubmit(form, err, button, action) {
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.hidden = true;
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      showError(err, e);
    } finally {
      button.disabled = false;
    }
  });
}

export function renderSignIn(main, { reason, onSignedIn, query }) {
  const created = query.get("created");
  const user = h("input", { name: "username", autocomplete: "username", required: true, value: created || undefined });
  const pass = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const err = errorBox();
  const button = h("button", { class: "btn primary", type: "submit" }, "Sign in");
  const form = h(
    "form",
    { id: "signin-form", novalidate: false },
    reason && REASONS[reason] ? h("p", { class: "info", role: "status", id: "signed-out-reason" }, REASONS[reason]) : null,
    created ? h("p", { class: "info", role: "status" }, "Account created. Sign in to continue.") : null,
    field("Username", user),
    field("Password", pass),
    err,
    button,
  );
  onSubmit(form, err, button, async () => {
    await api.signIn(user.value.trim(), pass.value);
    onSignedIn();
  });
  main.append(shell("Sign in", form, ["No account yet? ", h("a", { href: "#/signup" }, "Create one")]));
  (created ? pass : user).focus();
}

export function renderSignUp(main) {
  const user = h("input", { name: "username", autocomplete: "username", required: true, minlength: 3 });
  const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
  const pass = h("input", { name: "password", type: "password", autocomplete: "new-password", required: true, minlength: 8 });
  const role = h(
    "select",
    { name: "role" },
    h("option", { value: "requester" }, "Requester: I run jobs"),
    h("option", { value: "provider" }, "Provider: I offer GPU hosts"),
  );
  const err = errorBox();
  const button = h("button", { class: "btn primary", type: "submit" }, "Create account");
  const form = h(
    "form",
    { id: "signup-form" },
    field("Username", user),
    field("Email", email),
    field("Password", pass, "At least 8 characters."),
    field("Account type", role),
    err,
    button,
  );
  onSubmit(form, err, button, async () => {
    await api.register(user.value.trim(), email.value.trim(), pass.value, role.value);
    location.hash = `#/signin?created=${encodeURIComponent(user.value.trim())}`;
  });
  main.append(shell("Create an account", form, ["Already have one? ", h("a", { href: "#/signin" }, "Sign in")]));
  user.focus();
}
