// The page's entry: session (login/logout), hash routes, and the refresh loop.

import { api, setCsrf, whenUnauthorized } from "./api.js";
import { $, announce, setText } from "./dom.js";
import { clearSyncAllOutcome, initFleet, refreshFleet } from "./fleet.js";
import { forgetGroups, initGroups, refreshGroups } from "./groups.js";
import { forgetCreatedToken, initTokens, refreshTokens } from "./tokens.js";
import { initWorker, refreshWorker, showWorker } from "./worker.js";

const REFRESH_MS = 3000;
const VIEWS = ["login", "fleet", "worker", "tokens", "groups"];

let authenticated = false;
let route = { view: "fleet" };
let timer = null;
let refreshing = false;
let loggingIn = false;

function parseRoute(hash) {
  const path = hash.replace(/^#/, "") || "/";
  const worker = path.match(/^\/workers\/([^/]+)$/);
  if (worker) {
    try {
      return { view: "worker", id: decodeURIComponent(worker[1]) };
    } catch {
      return { view: "fleet" };
    }
  }
  if (path === "/tokens") return { view: "tokens" };
  if (path === "/groups") return { view: "groups" };
  return { view: "fleet" };
}

function showView(name, { focus = true } = {}) {
  $("booting").hidden = true;
  for (const view of VIEWS) $(`view-${view}`).hidden = view !== name;
  $("nav").hidden = name === "login";
  for (const link of document.querySelectorAll("[data-nav]")) {
    const active = link.dataset.nav === name || (name === "worker" && link.dataset.nav === "fleet");
    if (active) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // Move focus to the new view's heading on navigation, as a page load would.
  if (focus) $(`view-${name}`).querySelector("h1")?.focus({ preventScroll: false });
}

async function navigate({ focus = true } = {}) {
  if (!authenticated) {
    showView("login", { focus });
    return;
  }
  const previous = route.view;
  route = parseRoute(location.hash);
  if (route.view !== "tokens") forgetCreatedToken();
  if (route.view === "worker") {
    document.title = `${route.id} · Vectis`;
    showView("worker", { focus });
    await showWorker(route.id);
  } else if (route.view === "tokens") {
    document.title = "Tokens · Vectis";
    showView("tokens", { focus });
    await refreshTokens();
  } else if (route.view === "groups") {
    document.title = "Config groups · Vectis";
    showView("groups", { focus });
    await refreshGroups();
  } else {
    document.title = "Fleet · Vectis";
    if (previous !== "fleet") clearSyncAllOutcome();
    showView("fleet", { focus });
    await refreshFleet();
  }
  schedule();
}

// One refresh at a time, every few seconds, only while the page is visible and signed in.
function schedule() {
  clearTimeout(timer);
  if (!authenticated) return;
  timer = setTimeout(tick, REFRESH_MS);
}

async function tick() {
  if (refreshing || document.hidden || !authenticated) {
    schedule();
    return;
  }
  refreshing = true;
  try {
    if (route.view === "fleet") await refreshFleet();
    else if (route.view === "worker") await refreshWorker();
  } finally {
    refreshing = false;
    schedule();
  }
}

function signedOut(message = "") {
  authenticated = false;
  setCsrf("");
  clearTimeout(timer);
  forgetCreatedToken();
  forgetGroups();
  setText($("login-error"), message);
  showView("login");
  $("login-token").focus();
}

async function logIn(event) {
  event.preventDefault();
  const input = $("login-token");
  const error = $("login-error");
  const token = input.value.trim();
  if (!token) {
    setText(error, "Enter the admin token.");
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  if (loggingIn) return;
  loggingIn = true;
  const button = $("login-form").querySelector("button");
  button.setAttribute("aria-disabled", "true");
  try {
    const data = await api("POST", "/login", { token }, { quiet401: true });
    setCsrf(data?.csrf);
    authenticated = true;
    input.value = "";
    input.removeAttribute("aria-invalid");
    setText(error, "");
    announce("Logged in.");
    await navigate();
  } catch (err) {
    input.setAttribute("aria-invalid", "true");
    setText(error, err.status === 401 ? "That token is not valid." : err.message);
    input.select();
  } finally {
    loggingIn = false;
    button.setAttribute("aria-disabled", "false");
  }
}

async function logOut() {
  try {
    await api("POST", "/logout", undefined, { quiet401: true });
  } catch {
    // The session is gone either way; show the login form.
  }
  signedOut("");
  announce("Logged out.");
}

async function start() {
  initFleet();
  initWorker();
  initTokens();
  initGroups();
  $("login-form").addEventListener("submit", logIn);
  $("logout").addEventListener("click", logOut);
  window.addEventListener("hashchange", () => navigate());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && authenticated) tick();
  });
  whenUnauthorized(() => {
    if (authenticated) signedOut("Your session ended; log in again.");
  });
  try {
    const session = await api("GET", "/session", undefined, { quiet401: true });
    authenticated = Boolean(session?.authenticated);
    setCsrf(session?.csrf);
  } catch {
    authenticated = false;
  }
  await navigate({ focus: false });
  if (!authenticated) $("login-token").focus();
}

start();
