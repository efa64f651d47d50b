// The fleet view: one page of workers at a time, counts from the summary, filters and search
// run by the dashboard, Sync and Sync all (a background job whose progress is shown).
// Rows are kept by worker id and updated in place, so a refresh never moves focus; the
// dashboard answers an unchanged page or summary with 304, so an idle page costs little.

import { api } from "./api.js";
import { APPLY_FAILED, DNS_STATUSES, STATUSES } from "./contract.js";
import {
  $,
  absolute,
  ago,
  announce,
  describeFailure,
  h,
  OTHER_BUILD,
  setBadge,
  setText,
  statusOf,
  versionText,
} from "./dom.js";
import { gauge, rowGauges, updateGauge } from "./stats.js";

const rows = new Map(); // id -> {el, parts, worker}
const syncing = new Set();
const notes = new Map(); // id -> {text, kind, until}: an action's outcome, shown for a while
const PAGE_SIZE = 100;
const JOB_KEY = "vectis.syncAllJob";
let workers = [];
let filter = "all";
let search = "";
let selector = "";
let searchTimer = 0;
let cursors = [""]; // the cursor of each page visited; the last one is shown
let nextCursor = null;
let summary = null;
let syncAllRunning = false;
let jobTimer = 0;

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
  // A field read 250 ms after the last key: one request for a word typed, not one a letter.
  const onTyped = (id, take) =>
    $(id).addEventListener("input", (event) => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        take(event.target.value.trim());
        firstPage();
      }, 250);
    });
  onTyped("fleet-search", (text) => {
    search = text;
  });
  onTyped("fleet-selector", (text) => {
    selector = text;
  });
  $("sync-all").addEventListener("click", syncAll);
  $("page-prev").addEventListener("click", () => {
    if (cursors.length > 1) {
      cursors.pop();
      refreshFleet();
    }
  });
  $("page-next").addEventListener("click", () => {
    if (nextCursor) {
      cursors.push(nextCursor);
      refreshFleet();
    }
  });
  // A Sync all left running on another visit of the page: follow it again.
  const job = sessionStorage.getItem(JOB_KEY);
  if (job) followJob(job);
}

function firstPage() {
  cursors = [""];
  refreshFleet();
}

function cap(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function setFilter(status) {
  filter = status;
  for (const chip of $("status-filter").children) {
    chip.setAttribute("aria-pressed", chip.dataset.filter === status ? "true" : "false");
  }
  firstPage();
}

function pageQuery() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const cursor = cursors[cursors.length - 1];
  if (cursor) query.set("cursor", cursor);
  if (filter !== "all") query.set("status", filter);
  if (search) query.set("q", search);
  if (selector) query.set("selector", selector);
  return query.toString();
}

// The counts of the workers the selector selects (all of them without one).
function summaryQuery() {
  return selector ? `?${new URLSearchParams({ selector })}` : "";
}

export async function refreshFleet() {
  try {
    const [counts, page] = await Promise.all([
      api("GET", `/infra/workers/summary${summaryQuery()}`),
      api("GET", `/infra/workers?${pageQuery()}`),
    ]);
    summary = counts && typeof counts === "object" ? counts : null;
    const list = Array.isArray(page?.workers) ? page.workers : [];
    if (!list.length && cursors.length > 1) {
      // The page emptied (workers left): show the one before it.
      cursors.pop();
      return refreshFleet();
    }
    nextCursor = typeof page?.next_cursor === "string" ? page.next_cursor : null;
    render(list);
    setText($("fleet-error"), "");
    setText($("fleet-updated"), new Date().toLocaleTimeString());
  } catch (err) {
    if (err.status !== 401) setText($("fleet-error"), `Could not load the workers: ${err.message}`);
  }
}

function render(list) {
  workers = list.filter((w) => w && typeof w.id === "string");
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
  updatePager();
  applyFilter();
}

function updatePager() {
  const first = (cursors.length - 1) * PAGE_SIZE;
  $("page-prev").hidden = cursors.length <= 1;
  $("page-next").hidden = !nextCursor;
  $("fleet-pager").hidden = cursors.length <= 1 && !nextCursor;
  const shown = workers.length ? `Workers ${first + 1}–${first + workers.length}` : "";
  setText($("page-info"), shown);
}

function field(label, valueEl) {
  return h("div", { class: "w-field" }, h("span", { class: "k", text: label }), valueEl);
}

function buildRow(id) {
  const parts = {
    link: h("a", { href: `#/workers/${encodeURIComponent(id)}`, class: "w-link", text: id }),
    subdomain: h("span", { class: "sub" }),
    hostname: h("span", { class: "sub host" }),
    labels: h("ul", { class: "labels", "aria-label": "Labels" }),
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
    h("div", { class: "w-name" }, parts.link, parts.subdomain, parts.hostname, parts.labels),
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
  updateLabels(parts.labels, worker.labels);
  setText(parts.ip, worker.ip ? (worker.port ? `${worker.ip}:${worker.port}` : worker.ip) : "–");
  const dns = typeof worker.dns_status === "string" ? worker.dns_status : "none";
  setText(parts.dns, dns);
  parts.dns.className = `v dns dns-${DNS_STATUSES.includes(dns) ? dns : "none"}`;
  setText(parts.last, ago(worker.last_sync));
  if (worker.last_sync) parts.last.setAttribute("datetime", worker.last_sync);
  parts.last.title = absolute(worker.last_sync);
  setText(parts.version, versionText(worker));
  const other = worker.version_current === false;
  parts.version.classList.toggle("stale", other);
  parts.version.title = other ? OTHER_BUILD : "";
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
  } else if (status === "outdated" && String(worker.last_error || "").startsWith(APPLY_FAILED)) {
    // Reached, but its apply command failed: the cause says what to fix on the worker.
    text = worker.last_error;
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

// Each label as a `key=value` chip, sorted by key; rebuilt only when they changed.
function updateLabels(list, labels) {
  const pairs =
    labels && typeof labels === "object"
      ? Object.entries(labels)
          .filter(([, v]) => typeof v === "string")
          .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      : [];
  const text = pairs.map(([k, v]) => `${k}=${v}`);
  if (list.dataset.shown === text.join("\n")) return;
  list.dataset.shown = text.join("\n");
  list.replaceChildren(...text.map((t) => h("li", { class: "label", text: t })));
  list.hidden = !text.length;
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
  const by = summary && typeof summary.status === "object" ? summary.status : {};
  const counts = { all: typeof summary?.total === "number" ? summary.total : 0 };
  for (const status of STATUSES) counts[status] = typeof by[status] === "number" ? by[status] : 0;
  for (const chip of $("status-filter").children) {
    const count = counts[chip.dataset.filter] ?? 0;
    setText(chip.querySelector(".chip-count"), count);
    const name = chip.dataset.filter === "all" ? "All workers" : cap(chip.dataset.filter);
    chip.setAttribute("aria-label", `${name}: ${count}`);
  }
}

// The dashboard filtered the page; what is left here is the message for an empty one.
function applyFilter() {
  const empty = $("fleet-empty");
  if (workers.length === 0) {
    const fleetEmpty = !summary || summary.total === 0;
    setText(
      empty,
      fleetEmpty
        ? "No workers yet. Create an enrollment token, then run its install command on a server."
        : "No worker matches this filter.",
    );
  }
  empty.hidden = workers.length !== 0;
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

// A Sync all outcome belongs to the visit it was pressed in: coming back to the fleet from
// another view, the rows tell the present and an old banner would contradict them.
export function clearSyncAllOutcome() {
  if (syncAllRunning) return;
  sessionStorage.removeItem(JOB_KEY);
  const outcome = $("sync-all-outcome");
  setText(outcome, "");
  outcome.className = "outcome";
}

async function syncAll() {
  if (syncAllRunning) return;
  try {
    const job = await api("POST", "/infra/workers/sync?background=true");
    if (!job || typeof job.id !== "string") throw new Error("the dashboard answered no job");
    sessionStorage.setItem(JOB_KEY, job.id);
    showJob(job);
    followJob(job.id);
  } catch (err) {
    const outcome = $("sync-all-outcome");
    setText(outcome, `Sync all failed: ${err.message}`);
    outcome.className = "outcome bad";
  }
}

// Poll the job twice a second while it runs; its outcome stays until the view is left, and
// a reload before then shows it again (a fast job may end before the first poll is answered).
function followJob(id) {
  clearTimeout(jobTimer);
  const poll = async () => {
    let job;
    try {
      job = await api("GET", `/infra/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      if (err.status === 404) sessionStorage.removeItem(JOB_KEY);
      setSyncAllRunning(false);
      return;
    }
    showJob(job);
    if (job?.state === "running") {
      jobTimer = setTimeout(poll, 500);
    } else {
      await refreshFleet();
    }
  };
  poll();
}

function showJob(job) {
  const outcome = $("sync-all-outcome");
  const running = job?.state === "running";
  setSyncAllRunning(running);
  const n = (key) => (typeof job?.[key] === "number" ? job[key] : 0);
  if (running) {
    setText(outcome, `Syncing ${n("done")} of ${n("total")} workers… ${n("failed")} failed so far.`);
    outcome.className = "outcome busy";
  } else if (job?.state === "done") {
    const at = new Date(job.finished_at || Date.now()).toLocaleTimeString();
    setText(outcome, `Sync all finished at ${at}: ${n("synced")} synced, ${n("failed")} failed, ${n("outdated")} outdated.`);
    outcome.className = n("failed") ? "outcome warn" : "outcome good";
  } else {
    setText(outcome, `Sync all failed: ${job?.error || "see the dashboard's log"}`);
    outcome.className = "outcome bad";
  }
}

function setSyncAllRunning(running) {
  if (syncAllRunning === running) return;
  syncAllRunning = running;
  $("sync-all").setAttribute("aria-disabled", running ? "true" : "false");
  for (const row of rows.values()) updateRow(row);
}
