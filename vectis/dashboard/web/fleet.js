// The fleet view: one row per worker, counts and filters, Sync and Sync all.
// Rows are kept by worker id and updated in place, so a refresh never moves focus.

import { api } from "./api.js";
import { DNS_STATUSES, STATUSES } from "./contract.js";
import {
  $,
  absolute,
  ago,
  announce,
  describeFailure,
  h,
  setBadge,
  setText,
  statusOf,
} from "./dom.js";
import { gauge, rowGauges, updateGauge } from "./stats.js";

const rows = new Map(); // id -> {el, parts, worker}
const syncing = new Set();
const notes = new Map(); // id -> {text, kind, until}: an action's outcome, shown for a while
let workers = [];
let filter = "all";
let search = "";
let syncAllRunning = false;

export function initFleet() {
  const chips = $("status-filter");
  for (const status of ["all", ...STATUSES]) {
    chips.append(
      h(
        "button",
        {
          type: "button",
          class: `chip chip-${status}`,
          dataset: { filter: status },
          "aria-pressed": status === "all" ? "true" : "false",
          onclick: () => setFilter(status),
        },
        h("span", { class: "chip-label", text: status === "all" ? "All" : cap(status) }),
        h("span", { class: "chip-count", text: "0" }),
      ),
    );
  }
  $("fleet-search").addEventListener("input", (event) => {
    search = event.target.value.trim().toLowerCase();
    applyFilter();
  });
  $("sync-all").addEventListener("click", syncAll);
}

function cap(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function setFilter(status) {
  filter = status;
  for (const chip of $("status-filter").children) {
    chip.setAttribute("aria-pressed", chip.dataset.filter === status ? "true" : "false");
  }
  applyFilter();
}

export async function refreshFleet() {
  try {
    const data = await api("GET", "/infra/workers");
    render(Array.isArray(data?.workers) ? data.workers : []);
    setText($("fleet-error"), "");
    setText($("fleet-updated"), new Date().toLocaleTimeString());
  } catch (err) {
    if (err.status !== 401) setText($("fleet-error"), `Could not load the workers: ${err.message}`);
  }
}

function render(list) {
  workers = list
    .filter((w) => w && typeof w.id === "string")
    .sort((a, b) => a.id.localeCompare(b.id));
  const seen = new Set();
  const container = $("workers");
  let previous = null;
  for (const worker of workers) {
    seen.add(worker.id);
    let row = rows.get(worker.id);
    if (!row) {
      row = buildRow(worker.id);
      rows.set(worker.id, row);
    }
    row.worker = worker;
    updateRow(row);
    // Keep DOM order equal to the sorted order without re-inserting rows already in place.
    const expected = previous ? previous.nextSibling : container.firstChild;
    if (expected !== row.el) container.insertBefore(row.el, expected);
    previous = row.el;
  }
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.el.remove();
      rows.delete(id);
    }
  }
  updateCounts();
  applyFilter();
}

function field(label, valueEl) {
  return h("div", { class: "w-field" }, h("span", { class: "k", text: label }), valueEl);
}

function buildRow(id) {
  const parts = {
    link: h("a", { href: `#/workers/${encodeURIComponent(id)}`, class: "w-link", text: id }),
    subdomain: h("span", { class: "sub" }),
    hostname: h("span", { class: "sub host" }),
    badge: h("span", { class: "badge", dataset: { status: "pending" } }),
    ip: h("span", { class: "v mono" }),
    dns: h("span", { class: "v dns" }),
    last: h("time", { class: "v" }),
    version: h("span", { class: "v" }),
    gauges: h("div", { class: "w-gauges" }),
    outcome: h("p", { class: "w-outcome" }),
    sync: h("button", { type: "button", class: "sync", text: "Sync" }),
  };
  parts.sync.addEventListener("click", () => syncOne(id));
  const el = h(
    "li",
    { class: "worker", dataset: { workerId: id } },
    h("div", { class: "w-name" }, parts.link, parts.subdomain, parts.hostname),
    h("div", { class: "w-status" }, parts.badge),
    field("IP", parts.ip),
    field("DNS", parts.dns),
    field("Last sync", parts.last),
    field("Version", parts.version),
    parts.gauges,
    h("div", { class: "w-actions" }, parts.sync),
    parts.outcome,
  );
  parts.sync.setAttribute("aria-describedby", `${rowDomId(id)}-outcome`);
  parts.outcome.id = `${rowDomId(id)}-outcome`;
  parts.link.id = `${rowDomId(id)}-name`;
  el.setAttribute("aria-labelledby", parts.link.id);
  return { el, parts, worker: null, gaugeEls: null };
}

function rowDomId(id) {
  return `w-${id.replace(/[^a-zA-Z0-9_-]/g, "_")}`;
}

function updateRow(row) {
  const { parts, worker } = row;
  const status = statusOf(worker.status);
  setBadge(parts.badge, status);
  parts.badge.dataset.status = status;
  setText(parts.subdomain, worker.subdomain || "");
  const host = typeof worker.hostname === "string" ? worker.hostname : "";
  setText(parts.hostname, host ? `host ${host}` : "");
  parts.hostname.hidden = !host;
  setText(parts.ip, worker.ip ? (worker.port ? `${worker.ip}:${worker.port}` : worker.ip) : "–");
  const dns = typeof worker.dns_status === "string" ? worker.dns_status : "none";
  setText(parts.dns, dns);
  parts.dns.className = `v dns dns-${DNS_STATUSES.includes(dns) ? dns : "none"}`;
  setText(parts.last, ago(worker.last_sync));
  if (worker.last_sync) parts.last.setAttribute("datetime", worker.last_sync);
  parts.last.title = absolute(worker.last_sync);
  setText(parts.version, worker.version || "–");
  updateRowGauges(row, worker.stats);

  const busy = syncing.has(worker.id) || syncAllRunning;
  row.el.setAttribute("aria-busy", busy ? "true" : "false");
  parts.sync.setAttribute("aria-disabled", busy ? "true" : "false");
  row.el.classList.toggle("is-busy", busy);
  const note = notes.get(worker.id);
  let text = "";
  let kind = "";
  if (busy) {
    text = "Syncing…";
    kind = "busy";
  } else if (status === "failed") {
    text = describeFailure(worker.last_error);
    kind = "bad";
  } else if (note && note.until > Date.now()) {
    ({ text, kind } = note);
  } else if (status === "outdated") {
    text = `Config revision ${worker.desired_revision ?? "?"} not applied yet (runs ${worker.applied_revision ?? "?"}).`;
    kind = "warn";
  } else if (status === "pending" && dns === "pending") {
    text = "Waiting for DNS and a first sync.";
  }
  setText(parts.outcome, text);
  parts.outcome.className = `w-outcome ${kind}`;
}

function updateRowGauges(row, stats) {
  const values = rowGauges(stats);
  const container = row.parts.gauges;
  if (!values) {
    if (row.gaugeEls !== null || !container.childElementCount) {
      container.replaceChildren(h("span", { class: "muted small", text: "No stats yet" }));
      row.gaugeEls = null;
    }
    return;
  }
  if (!row.gaugeEls) {
    row.gaugeEls = values.map(([label, percent, detail]) => gauge(label, percent, detail));
    container.replaceChildren(...row.gaugeEls);
    return;
  }
  values.forEach(([label, percent, detail], i) => updateGauge(row.gaugeEls[i], label, percent, detail));
}

function updateCounts() {
  const counts = { all: workers.length };
  for (const status of STATUSES) counts[status] = 0;
  for (const worker of workers) counts[statusOf(worker.status)] += 1;
  for (const chip of $("status-filter").children) {
    const count = counts[chip.dataset.filter] ?? 0;
    setText(chip.querySelector(".chip-count"), count);
    const name = chip.dataset.filter === "all" ? "All workers" : cap(chip.dataset.filter);
    chip.setAttribute("aria-label", `${name}: ${count}`);
  }
}

function matches(worker) {
  if (filter !== "all" && statusOf(worker.status) !== filter) return false;
  if (!search) return true;
  const haystack = [worker.id, worker.subdomain, worker.ip, worker.hostname]
    .filter((v) => typeof v === "string")
    .join(" ")
    .toLowerCase();
  return haystack.includes(search);
}

function applyFilter() {
  let shown = 0;
  for (const row of rows.values()) {
    const visible = matches(row.worker);
    if (row.el.hidden === visible) row.el.hidden = !visible;
    if (visible) shown += 1;
  }
  const empty = $("fleet-empty");
  if (workers.length === 0) {
    setText(empty, "No workers yet. Create an enrollment token, then run its install command on a server.");
  } else if (shown === 0) {
    setText(empty, "No worker matches this filter.");
  }
  empty.hidden = shown !== 0;
}

async function syncOne(id) {
  if (syncing.has(id) || syncAllRunning) return;
  syncing.add(id);
  notes.delete(id);
  const row = rows.get(id);
  if (row) updateRow(row);
  try {
    const worker = await api("POST", `/infra/workers/${encodeURIComponent(id)}/sync`);
    syncing.delete(id);
    const status = statusOf(worker?.status);
    if (worker && typeof worker.id === "string") mergeWorker(worker);
    if (status === "failed") {
      announce(`${id}: ${describeFailure(worker.last_error)}`);
    } else {
      const text = status === "synced" ? "Sync succeeded." : `Sync done: ${status}.`;
      notes.set(id, { text, kind: "good", until: Date.now() + 15000 });
      announce(`${id}: ${text}`);
    }
  } catch (err) {
    syncing.delete(id);
    notes.set(id, { text: `Sync failed: ${err.message}`, kind: "bad", until: Date.now() + 15000 });
    announce(`${id}: sync failed: ${err.message}`);
  }
  const again = rows.get(id);
  if (again) updateRow(again);
  refreshFleet();
}

function mergeWorker(worker) {
  const row = rows.get(worker.id);
  if (!row) return;
  row.worker = { ...row.worker, ...worker };
  workers = workers.map((w) => (w.id === worker.id ? row.worker : w));
  updateRow(row);
  updateCounts();
  applyFilter();
}

function countsText(data) {
  const source = data && typeof data === "object" ? (data.counts ?? data.outcomes ?? data) : {};
  const parts = [];
  for (const [key, value] of Object.entries(source)) {
    if (typeof value === "number" && key !== "total" && key !== "duration") parts.push(`${value} ${key}`);
  }
  return parts.length ? parts.join(", ") : "done";
}

// A Sync all outcome belongs to the visit it was pressed in: coming back to the fleet from
// another view, the rows tell the present and an old banner would contradict them.
export function clearSyncAllOutcome() {
  if (syncAllRunning) return;
  const outcome = $("sync-all-outcome");
  setText(outcome, "");
  outcome.className = "outcome";
}

async function syncAll() {
  const button = $("sync-all");
  if (syncAllRunning) return;
  syncAllRunning = true;
  button.setAttribute("aria-disabled", "true");
  const outcome = $("sync-all-outcome");
  setText(outcome, `Syncing ${workers.length} worker${workers.length === 1 ? "" : "s"}…`);
  outcome.className = "outcome busy";
  for (const row of rows.values()) updateRow(row);
  try {
    const data = await api("POST", "/infra/workers/sync");
    const at = new Date().toLocaleTimeString();
    setText(outcome, `Sync all finished at ${at}: ${countsText(data)}.`);
    outcome.className = "outcome good";
  } catch (err) {
    setText(outcome, `Sync all failed: ${err.message}`);
    outcome.className = "outcome bad";
  } finally {
    syncAllRunning = false;
    button.setAttribute("aria-disabled", "false");
  }
  await refreshFleet();
}
