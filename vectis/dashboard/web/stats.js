// A worker's latest stats as gauges. Stats come from psutil on the worker; every figure is
// optional, so each reader accepts the few shapes a stats object may take and skips the rest.

import { bytes, duration, h, parseTime, setText } from "./dom.js";

function num(value) {
  const n = typeof value === "string" ? Number(value) : value;
  return typeof n === "number" && Number.isFinite(n) ? n : null;
}

function percentOf(value) {
  if (value && typeof value === "object") {
    return num(value.percent ?? value.used_percent ?? value.pct);
  }
  return num(value);
}

export function cpuPercent(stats) {
  return percentOf(stats.cpu_percent ?? stats.cpu);
}

export function memoryPercent(stats) {
  return percentOf(stats.memory_percent ?? stats.memory ?? stats.mem ?? stats.virtual_memory);
}

// [{mount, percent, used, total}] from a list, a {mount: usage} map, or one usage object.
export function disks(stats) {
  const raw = stats.disks ?? stats.disk ?? stats.disk_usage ?? stats.mounts;
  const out = [];
  const add = (mount, usage) => {
    const percent = percentOf(usage);
    if (percent === null) return;
    const extra = usage && typeof usage === "object" ? usage : {};
    out.push({ mount: String(mount || extra.mount || extra.path || "/"), percent, ...pick(extra) });
  };
  if (Array.isArray(raw)) {
    for (const item of raw) if (item && typeof item === "object") add(item.mount ?? item.path, item);
  } else if (raw && typeof raw === "object") {
    if ("percent" in raw) add(raw.mount ?? raw.path, raw);
    else for (const [mount, usage] of Object.entries(raw)) add(mount, usage);
  } else if (num(stats.disk_percent) !== null) {
    add("/", num(stats.disk_percent));
  }
  return out;
}

function pick(usage) {
  return { used: num(usage.used), total: num(usage.total) };
}

function level(percent) {
  if (percent >= 90) return "high";
  if (percent >= 70) return "warn";
  return "ok";
}

// A labelled bar: role=meter with its value, so that it reads out as well as it looks.
export function gauge(label, percent, detail = "") {
  const bar = h("span", { class: "gauge-fill" });
  const meter = h(
    "span",
    { class: "gauge", role: "meter", "aria-valuemin": "0", "aria-valuemax": "100" },
    bar,
  );
  const value = h("span", { class: "gauge-value" });
  const wrap = h("span", { class: "gauge-row" }, h("span", { class: "gauge-label" }, label), meter, value);
  updateGauge(wrap, label, percent, detail);
  return wrap;
}

export function updateGauge(wrap, label, percent, detail = "") {
  const meter = wrap.querySelector(".gauge");
  const fill = wrap.querySelector(".gauge-fill");
  const value = wrap.querySelector(".gauge-value");
  const known = percent !== null && percent !== undefined;
  const p = known ? Math.max(0, Math.min(100, percent)) : 0;
  const shown = known ? `${Math.round(p)}%` : "–";
  meter.setAttribute("aria-label", label);
  meter.setAttribute("aria-valuenow", String(Math.round(p)));
  meter.setAttribute("aria-valuetext", known ? `${shown}${detail ? `, ${detail}` : ""}` : "unknown");
  // CSSOM, not a style attribute: the page's CSP forbids inline styles, not this.
  fill.style.width = `${p}%`;
  fill.className = `gauge-fill ${known ? level(p) : "none"}`;
  setText(value, shown);
  if (detail) wrap.title = detail;
}

// The three small gauges of a fleet row: CPU, memory, and the fullest disk.
export function rowGauges(stats) {
  if (!stats || typeof stats !== "object") return null;
  const all = disks(stats);
  const fullest = all.reduce((a, b) => (b.percent > (a?.percent ?? -1) ? b : a), null);
  return [
    ["CPU", cpuPercent(stats), ""],
    ["Memory", memoryPercent(stats), ""],
    ["Disk", fullest ? fullest.percent : null, fullest ? fullest.mount : ""],
  ];
}

// The worker page's stats panel, rebuilt on each refresh (it holds nothing focusable).
export function renderStats(container, stats) {
  container.replaceChildren();
  if (!stats || typeof stats !== "object") {
    container.append(h("p", { class: "muted", text: "No stats yet: they arrive with the first successful sync." }));
    return;
  }
  const list = h("div", { class: "gauges" });
  const mem = stats.memory ?? stats.virtual_memory;
  const memDetail =
    mem && typeof mem === "object" && num(mem.total) !== null
      ? `${bytes(mem.used ?? num(mem.total) - num(mem.available))} of ${bytes(mem.total)}`
      : "";
  list.append(gauge("CPU", cpuPercent(stats)));
  list.append(gauge("Memory", memoryPercent(stats), memDetail));
  for (const disk of disks(stats)) {
    const detail = disk.total !== null && disk.used !== null ? `${bytes(disk.used)} of ${bytes(disk.total)}` : "";
    list.append(gauge(`Disk ${disk.mount}`, disk.percent, detail));
  }
  container.append(list);

  const facts = h("dl", { class: "details compact" });
  const add = (term, value) => {
    if (value === null || value === undefined || value === "") return;
    facts.append(h("dt", { text: term }), h("dd", { text: String(value) }));
  };
  const load = stats.load_avg ?? stats.loadavg ?? stats.load_average;
  if (Array.isArray(load)) add("Load average", load.map((v) => (num(v) ?? 0).toFixed(2)).join(" "));
  add("CPUs", num(stats.cpu_count));
  const swap = stats.swap_percent ?? stats.swap;
  if (percentOf(swap) !== null) add("Swap", `${Math.round(percentOf(swap))}%`);
  if (num(stats.uptime) !== null) add("Uptime", duration(stats.uptime));
  if (num(stats.boot_time) !== null) add("Booted", new Date(num(stats.boot_time) * 1000).toLocaleString());
  if (num(stats.process_count ?? stats.processes) !== null) add("Processes", num(stats.process_count ?? stats.processes));
  const at = parseTime(stats.collected_at ?? stats.at ?? stats.timestamp);
  if (at !== null) add("Collected", new Date(at).toLocaleString());
  // A mount the worker could not read reports an error instead of figures.
  const raw = Array.isArray(stats.disks) ? stats.disks : [];
  for (const disk of raw) {
    if (disk && typeof disk === "object" && typeof disk.error === "string") {
      add(`Disk ${disk.mount ?? "?"}`, `unreadable: ${disk.error}`);
    }
  }
  if (facts.childElementCount) container.append(facts);
}
