// The router: routes live in the URL fragment (#/jobs/<id>), so the server serves one page.
import * as api from "./api.js";
import { clear, toast } from "./ui.js";
import * as auth from "./pages/auth.js";
import * as jobs from "./pages/jobs.js";
import * as job from "./pages/job.js";
import * as submit from "./pages/submit.js";
import * as fleet from "./pages/fleet.js";
import * as usage from "./pages/usage.js";
import * as storage from "./pages/storage.js";
import * as admin from "./pages/admin.js";
import * as keys from "./pages/keys.js";

const main = document.getElementById("main");
let cleanup = null;
let signedOutBecause = null;

const ROUTES = [
  [/^\/jobs\/([\w-]+)$/, job],
  [/^\/jobs$/, jobs],
  [/^\/submit$/, submit],
  [/^\/fleet$/, fleet],
  [/^\/usage$/, usage],
  [/^\/storage$/, storage],
  [/^\/admin$/, admin],
  [/^\/keys$/, keys],
];

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/jobs";
  const [path, query = ""] = raw.split("?");
  return { path, query: new URLSearchParams(query) };
}

function showChrome(user) {
  document.getElementById("topbar").hidden = !user;
  if (!user) return;
  document.getElementById("whoami").textContent = `${user.username} · ${user.role}`;
  for (const a of document.querySelectorAll("#nav a[data-role]")) {
    a.hidden = a.dataset.role !== user.role;
  }
}

function markNav(path) {
  for (const a of document.querySelectorAll("#nav a")) {
    const on = path === `/${a.dataset.page}` || path.startsWith(`/${a.dataset.page}/`);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const { path, query } = parseHash();
  const user = api.current();
  showChrome(user);
  clear(main);
  if (!user) {
    const page = path === "/signup" ? auth.renderSignUp : auth.renderSignIn;
    cleanup = page(main, { reason: signedOutBecause, onSignedIn, query });
    return;
  }
  if (path === "/signin" || path === "/signup") {
    location.hash = "#/jobs";
    return;
  }
  markNav(path);
  for (const [re, mod] of ROUTES) {
    const m = path.match(re);
    if (m) {
      cleanup = mod.render(main, { args: m.slice(1), query, user }) || null;
      main.focus({ preventScroll: true });
      return;
    }
  }
  location.hash = "#/jobs";
}

function onSignedIn() {
  signedOutBecause = null;
  if (/^#\/sign(in|up)/.test(location.hash) || !location.hash) location.hash = "#/jobs";
  else route();
}

api.onSessionEnd((reason) => {
  // several polls may fail at once; the sign-in page is shown once
  if (document.getElementById("signin-form") && reason !== "signed-out") return;
  signedOutBecause = reason;
  if (reason === "signed-out") toast("Signed out.");
  route();
});

document.getElementById("signout").addEventListener("click", async () => {
  await api.signOut();
  location.hash = "#/signin";
});

window.addEventListener("hashchange", route);

// The fragment is the router's, so the skip link moves focus itself instead of navigating.
document.querySelector(".skip").addEventListener("click", (ev) => {
  ev.preventDefault();
  main.focus();
});

// Boot: a still-valid refresh cookie signs us back in silently after a reload.
(async () => {
  try {
    await api.resume();
  } catch {
    /* offline or signed out: the sign-in page says so */
  }
  route();
})();
