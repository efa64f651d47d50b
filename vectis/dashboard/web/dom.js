// Element building and formatting. Data only ever reaches the page as text, never as markup.

import { STATUSES } from "./contract.js";

export function $(id) {
  return document.getElementById(id);
}

// h("td", {class: "x", dataset: {k: "v"}}, "text", child): properties set one by one.
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// Set text only when it changed, so that polling does not disturb selection or screen readers.
export function setText(el, value) {
  const text = value === undefined || value === null ? "" : String(value);
  if (el.textContent !== text) el.textContent = text;
}

export function announce(message) {
  const live = $("announcer");
  live.textContent = "";
  // Cleared first, then set on the next frame, so that a repeated message is announced again.
  requestAnimationFrame(() => {
    live.textContent = message;
  });
}

export function statusOf(value) {
  return STATUSES.includes(value) ? value : "pending";
}

export function setBadge(el, status) {
  const value = statusOf(status);
  setText(el, value);
  el.className = `badge badge-${value}`;
}

export function parseTime(value) {
  if (!value) return null;
  const ms = Date.parse(value);
  return Number.isNaN(ms) ? null : ms;
}

export function ago(value, now = Date.now()) {
  const ms = parseTime(value);
  if (ms === null) return "never";
  const seconds = Math.round((now - ms) / 1000);
  if (seconds < 0) return "just now";
  if (seconds < 10) return "just now";
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

export function until(value, now = Date.now()) {
  const ms = parseTime(value);
  if (ms === null) return "never";
  const seconds = Math.round((ms - now) / 1000);
  if (seconds <= 0) return "expired";
  if (seconds < 3600) return `in ${Math.max(1, Math.round(seconds / 60))} min`;
  if (seconds < 172800) return `in ${Math.round(seconds / 3600)} h`;
  return `in ${Math.round(seconds / 86400)} d`;
}

export function absolute(value) {
  const ms = parseTime(value);
  return ms === null ? "" : new Date(ms).toLocaleString();
}

export function duration(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return "";
  const days = Math.floor(s / 86400);
  const hours = Math.floor((s % 86400) / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  if (days) return `${days} d ${hours} h`;
  if (hours) return `${hours} h ${minutes} min`;
  return `${minutes} min`;
}

export function bytes(value) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size.toFixed(size < 10 && unit ? 1 : 0)} ${units[unit]}`;
}

// The cause of a failed sync in a few words, from the dashboard's error text.
export function failureCause(error) {
  const text = String(error || "").toLowerCase();
  if (!text) return "unknown error";
  if (text.includes("identity") || text.includes("signature")) return "identity mismatch";
  if (text.includes("timeout") || text.includes("timed out")) return "timeout";
  if (/unreachable|refused|connect|resolve|network|no route|reset/.test(text)) {
    return "unreachable";
  }
  return "error";
}

export function describeFailure(error) {
  const cause = failureCause(error);
  const text = String(error || "").trim();
  if (!text) return `Failed: ${cause}`;
  return text.toLowerCase().startsWith(cause) ? `Failed: ${text}` : `Failed (${cause}): ${text}`;
}

// A worker's version, and whether it is another build than the dashboard's (version_current
// false: install.sh from this dashboard upgrades it). "–" when the worker has not said.
export const OTHER_BUILD = "Not the dashboard's version: reinstall with its install.sh";

export function versionText(worker) {
  if (!worker.version) return "–";
  return worker.version_current === false ? `${worker.version} (not current)` : worker.version;
}
