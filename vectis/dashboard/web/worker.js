// A worker's page: details, latest stats, history, config editor, sync and delete.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import {
  $,
  absolute,
  ago,
  announce,
  describeFailure,
  duration,
  h,
  OTHER_BUILD,
  setBadge,
  setText,
  statusOf,
  versionText,
} from "./dom.js";
import { renderStats } from "./stats.js";

let current = null; // the id shown
let worker = null;
let editorBase = ""; // the config text the editor was last filled with
let busy = false;

export function initWorker() {
  $("worker-sync").addEventListener("click", syncNow);
  $("worker-delete").addEventListener("click", deleteWorker);
  $("config-form").addEventListener("submit", saveConfig);
  $("config-reset").addEventListener("click", () => {
    fillEditor(true);
    setMessage("Changes discarded.", "");
  });
  $("config-editor").addEventListener("input", () => {
    $("config-editor").removeAttribute("aria-invalid");
  });
}

export function showWorker(id) {
  if (current !== id) {
    current = id;
    worker = null;
    editorBase = "";
    $("config-editor").value = "";
    setText($("worker-title"), id);
    setText($("worker-outcome"), "");
    setText($("worker-error"), "");
    setMessage("", "");
    $("worker-details").replaceChildren();
    $("worker-stats").replaceChildren();
    $("worker-history").replaceChildren();
    $("worker-badge").hidden = true;
  }
  return refreshWorker();
}

function configText(config) {
  return JSON.stringify(config && typeof config === "object" ? config : {}, null, 2);
}

// Fill the editor from the server unless the operator is editing it. It edits the worker's
// own config, which goes over its groups' (the merged one is shown beside it).
function fillEditor(force = false) {
  const editor = $("config-editor");
  const text = configText(worker?.own_config ?? worker?.config);
  const untouched = editor.value === editorBase;
  if (force || (untouched && document.activeElement !== editor)) {
    if (editor.value !== text) editor.value = text;
    editorBase = text;
  }
}

export async function refreshWorker() {
  const id = current;
  if (!id) return;
  try {
    const data = await api("GET", `/infra/workers/${encodeURIComponent(id)}`);
    if (id !== current) return;
    worker = data;
    render();
    setText($("worker-error"), "");
  } catch (err) {
    if (id !== current || err.status === 401) return;
    if (err.status === 404) {
      setText($("worker-error"), `No worker ${id}: it may have been deleted.`);
      $("worker-sync").hidden = true;
      $("worker-delete").hidden = true;
    } else {
      setText($("worker-error"), `Could not load the worker: ${err.message}`);
    }
  }
}

function render() {
  const status = statusOf(worker.status);
  const badge = $("worker-badge");
  badge.hidden = false;
  setBadge(badge, status);
  $("worker-sync").hidden = false;
  $("worker-delete").hidden = false;
  renderDetails();
  renderStats($("worker-stats"), worker.stats);
  renderHistory();
  fillEditor();
  setText(
    $("config-revisions"),
    `Desired revision ${worker.desired_revision ?? 0}; the worker runs revision ${worker.applied_revision ?? 0}. ` +
      "Saving makes a new revision when the merged config changes; the worker is outdated until it applies it.",
  );
  renderSources();
}

// The desired config's keys and where each comes from: a config group, or this worker.
function renderSources() {
  const sources = worker.config_sources && typeof worker.config_sources === "object" ? worker.config_sources : {};
  const keys = Object.keys(sources);
  const list = $("config-sources");
  list.replaceChildren(
    ...keys.map((key) => {
      const from = String(sources[key]);
      const where = from.startsWith("group:") ? `group ${from.slice(6)}` : "this worker";
      return h("li", {}, h("code", { text: key }), ` from ${where}`);
    }),
  );
  setText($("config-merged"), keys.length ? configText(worker.config) : "");
  $("config-merged-block").hidden = !keys.length;
}

function renderDetails() {
  const dl = $("worker-details");
  const items = [];
  const add = (term, value, extra = {}) => {
    if (value === null || value === undefined || value === "") return;
    items.push(h("dt", { text: term }), h("dd", extra, String(value)));
  };
  const meta = worker.metadata && typeof worker.metadata === "object" ? worker.metadata : {};
  add("Subdomain", worker.subdomain, { class: "mono" });
  add("IP", worker.ip, { class: "mono" });
  add("Port", worker.port);
  add("DNS", worker.dns_error ? `${worker.dns_status}: ${worker.dns_error}` : worker.dns_status);
  add("Last sync", worker.last_sync ? `${ago(worker.last_sync)} (${absolute(worker.last_sync)})` : "never");
  if (statusOf(worker.status) === "failed" || worker.last_error) {
    add("Last error", worker.last_error ? describeFailure(worker.last_error) : "");
  }
  add("Consecutive failures", worker.consecutive_failures ?? 0);
  if (worker.version) {
    const other = worker.version_current === false;
    add("Version", versionText(worker), other ? { class: "stale", title: OTHER_BUILD } : {});
  }
  const labels = worker.labels && typeof worker.labels === "object" ? Object.entries(worker.labels) : [];
  add("Labels", labels.map(([k, v]) => `${k}=${v}`).sort().join(", ") || "none", { class: "mono" });
  add("Hostname", worker.hostname ?? meta.hostname);
  add("OS", [meta.os, meta.os_release ?? meta.release].filter(Boolean).join(" "));
  add("Kernel", meta.kernel);
  add("Architecture", meta.arch ?? meta.machine);
  if (meta.uptime !== undefined) add("Uptime", duration(meta.uptime));
  add("Registered", worker.created_at ? absolute(worker.created_at) : "");
  dl.replaceChildren(...items);
}

function renderHistory() {
  const body = $("worker-history");
  // The dashboard lists changes oldest first; the page shows the newest on top.
  const history = Array.isArray(worker.history) ? [...worker.history].reverse() : [];
  if (!history.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: "4", class: "muted", text: "No status changes yet." })));
    return;
  }
  body.replaceChildren(
    ...history.map((entry) => {
      const status = h("span");
      setBadge(status, entry?.status);
      const previous = h("span");
      setBadge(previous, entry?.previous);
      return h(
        "tr",
        {},
        h("td", { title: absolute(entry?.at) }, h("time", { datetime: entry?.at ?? "", text: ago(entry?.at) })),
        h("td", {}, status),
        h("td", {}, previous),
        h("td", { class: "cause", text: entry?.cause ?? "" }),
      );
    }),
  );
}

function setMessage(text, kind) {
  const el = $("config-message");
  setText(el, text);
  el.className = `outcome ${kind}`;
}

async function saveConfig(event) {
  event.preventDefault();
  const editor = $("config-editor");
  let config;
  try {
    config = JSON.parse(editor.value);
  } catch (err) {
    editor.setAttribute("aria-invalid", "true");
    setMessage(`Not valid JSON: ${err.message}. Nothing was saved.`, "bad");
    editor.focus();
    return;
  }
  if (!config || typeof config !== "object" || Array.isArray(config)) {
    editor.setAttribute("aria-invalid", "true");
    setMessage("The config must be a JSON object, like {\"key\": \"value\"}. Nothing was saved.", "bad");
    editor.focus();
    return;
  }
  const id = current;
  setMessage("Saving…", "busy");
  try {
    const data = await api("PUT", `/infra/workers/${encodeURIComponent(id)}/config`, config);
    if (id !== current) return;
    await refreshWorker();
    fillEditor(true);
    const revision = data?.desired_revision ?? worker?.desired_revision;
    setMessage(`Saved as revision ${revision ?? "?"}. The worker is ${statusOf(worker?.status)} until it applies it.`, "good");
  } catch (err) {
    editor.setAttribute("aria-invalid", "true");
    setMessage(`Not saved: ${err.message}`, "bad");
  }
}

async function syncNow() {
  if (busy || !current) return;
  busy = true;
  const id = current;
  const outcome = $("worker-outcome");
  const button = $("worker-sync");
  button.setAttribute("aria-disabled", "true");
  setText(outcome, "Syncing…");
  setMessage("", "");
  outcome.className = "outcome busy";
  try {
    const data = await api("POST", `/infra/workers/${encodeURIComponent(id)}/sync`);
    const status = statusOf(data?.status);
    const text = status === "failed" ? describeFailure(data?.last_error) : `Sync succeeded: ${status}.`;
    setText(outcome, text);
    outcome.className = `outcome ${status === "failed" ? "bad" : "good"}`;
  } catch (err) {
    setText(outcome, `Sync failed: ${err.message}`);
    outcome.className = "outcome bad";
  } finally {
    busy = false;
    button.setAttribute("aria-disabled", "false");
  }
  await refreshWorker();
}

async function deleteWorker() {
  const id = current;
  if (!id) return;
  const ok = await confirmAction({
    title: `Delete ${id}?`,
    text: "The worker is deregistered and its DNS record is removed. It can register again with a new enrollment token.",
    action: "Delete",
  });
  if (!ok) return;
  try {
    await api("DELETE", `/infra/workers/${encodeURIComponent(id)}`);
    announce(`${id} deleted.`);
    current = null;
    location.hash = "#/";
  } catch (err) {
    setText($("worker-error"), `Could not delete: ${err.message}`);
  }
}
