// Config groups: list, create or replace (the form), edit (fills the form), delete.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { GROUP_NAME_PATTERN, GROUP_PRIORITY_MAX, GROUP_PRIORITY_MIN } from "./contract.js";
import { $, absolute, ago, announce, h, setText } from "./dom.js";

const NAME = new RegExp(GROUP_NAME_PATTERN);
// The list shows a config this long at most; Edit puts the whole of it in the form.
const CONFIG_SHOWN = 240;
const FIELDS = ["group-name", "group-selector", "group-priority", "group-config"];

let known = new Set(); // the names in the list as last loaded
let editing = ""; // the group whose fields Edit put in the form
let saving = false;

export function initGroups() {
  $("group-form").addEventListener("submit", saveGroup);
  $("group-clear").addEventListener("click", () => {
    clearForm();
    $("group-name").focus();
  });
  for (const id of FIELDS) $(id).addEventListener("input", () => $(id).removeAttribute("aria-invalid"));
  // Another name is another group: the count shown for the edited one no longer applies.
  $("group-name").addEventListener("input", () => {
    if ($("group-name").value.trim() !== editing) setText($("group-selected"), "");
  });
}

// Logging out leaves no config in the page.
export function forgetGroups() {
  clearForm();
  known = new Set();
  $("group-rows").replaceChildren();
  setText($("groups-outcome"), "");
  setText($("groups-error"), "");
}

function clearForm() {
  $("group-form").reset();
  editing = "";
  for (const id of FIELDS) $(id).removeAttribute("aria-invalid");
  setText($("group-form-error"), "");
  setText($("group-selected"), "");
  setOutcome("", "");
}

function setOutcome(text, kind) {
  const el = $("group-outcome");
  setText(el, text);
  el.className = `outcome span ${kind}`;
}

function refuse(id, message) {
  const field = $(id);
  field.setAttribute("aria-invalid", "true");
  setText($("group-form-error"), `${message} Nothing was saved.`);
  field.focus();
}

function workers(n) {
  return n === 1 ? "1 worker" : `${n} workers`;
}

function effect(count) {
  if (typeof count !== "number") return "";
  if (count === 0) return "no worker's desired config changed.";
  return `${workers(count)} given a new revision, outdated until they apply it.`;
}

// The form's fields as a group body, or null once a field is refused (with the reason shown).
function readForm() {
  const name = $("group-name").value.trim();
  if (!NAME.test(name)) {
    refuse(
      "group-name",
      "The name must be 1 to 63 lowercase letters, digits or hyphens, starting and ending with a letter or digit.",
    );
    return null;
  }
  const priorityText = $("group-priority").value.trim();
  const priority = priorityText === "" ? 0 : Number(priorityText);
  if (!Number.isInteger(priority) || priority < GROUP_PRIORITY_MIN || priority > GROUP_PRIORITY_MAX) {
    refuse(
      "group-priority",
      `The priority must be a whole number from ${GROUP_PRIORITY_MIN} to ${GROUP_PRIORITY_MAX}.`,
    );
    return null;
  }
  const configText = $("group-config").value.trim();
  let config;
  try {
    config = JSON.parse(configText || "{}");
  } catch (err) {
    refuse("group-config", `The config is not valid JSON: ${err.message}.`);
    return null;
  }
  if (!config || typeof config !== "object" || Array.isArray(config)) {
    refuse("group-config", 'The config must be a JSON object, like {"key": "value"}.');
    return null;
  }
  return { name, body: { selector: $("group-selector").value.trim(), priority, config } };
}

// Which field a refusal of the dashboard is about ("'selector': ...", "'config.x': ...").
function fieldOf(message) {
  const found = /^'(selector|priority|config)\b/.exec(message);
  return found ? `group-${found[1]}` : "";
}

async function saveGroup(event) {
  event.preventDefault();
  if (saving) return;
  setText($("group-form-error"), "");
  setOutcome("", "");
  for (const id of FIELDS) $(id).removeAttribute("aria-invalid");
  const form = readForm();
  if (!form) return;
  const { name, body } = form;
  // A name from the list that Edit did not fill in would replace that group: ask first.
  if (known.has(name) && name !== editing) {
    const ok = await confirmAction({
      title: `Replace group ${name}?`,
      text: "A group of this name exists: its selector, priority and config are replaced by the form's.",
      action: "Replace",
    });
    if (!ok) return;
  }
  saving = true;
  const button = $("group-form").querySelector("button[type=submit]");
  button.setAttribute("aria-disabled", "true");
  setOutcome("Saving…", "busy");
  try {
    const data = await api("PUT", `/infra/config/groups/${encodeURIComponent(name)}`, body);
    const verb = known.has(name) ? "saved" : "created";
    editing = name;
    setText($("group-selected"), "");
    setOutcome(`Group ${name} ${verb}: ${effect(data?.reconfigured)}`, "good");
    await refreshGroups();
  } catch (err) {
    setOutcome("", "");
    if (err.status === 401) return;
    const field = fieldOf(err.message);
    if (field) $(field).setAttribute("aria-invalid", "true");
    setText($("group-form-error"), `Not saved: ${err.message}`);
    if (field) $(field).focus();
  } finally {
    saving = false;
    button.setAttribute("aria-disabled", "false");
  }
}

export async function refreshGroups() {
  try {
    const data = await api("GET", "/infra/config/groups");
    const list = Array.isArray(data?.groups) ? data.groups : [];
    render(list.filter((g) => g && typeof g.name === "string"));
    setText($("groups-error"), "");
  } catch (err) {
    if (err.status !== 401) setText($("groups-error"), `Could not load the groups: ${err.message}`);
  }
}

function compact(config) {
  const text = JSON.stringify(config && typeof config === "object" ? config : {});
  return text.length > CONFIG_SHOWN ? `${text.slice(0, CONFIG_SHOWN)}…` : text;
}

function render(list) {
  known = new Set(list.map((g) => g.name));
  const body = $("group-rows");
  const focused = document.activeElement?.closest?.("tr")?.dataset.group;
  const focusedAction = document.activeElement?.dataset?.action;
  const rows = list.map((group) =>
    h(
      "tr",
      { dataset: { group: group.name } },
      h("th", { scope: "row", class: "mono", text: group.name }),
      h(
        "td",
        { class: group.selector ? "mono" : "muted" },
        group.selector || "every worker",
      ),
      h("td", { class: "num", text: String(group.priority ?? 0) }),
      h("td", { class: "mono small config-cell", text: compact(group.config) }),
      h("td", { title: absolute(group.updated_at), text: ago(group.updated_at) }),
      h(
        "td",
        { class: "row-actions" },
        h("button", {
          type: "button",
          class: "ghost small",
          text: "Edit",
          dataset: { action: "edit" },
          "aria-label": `Edit group ${group.name}`,
          onclick: () => editGroup(group),
        }),
        h("button", {
          type: "button",
          class: "danger small",
          text: "Delete",
          dataset: { action: "delete" },
          "aria-label": `Delete group ${group.name}`,
          onclick: () => deleteGroup(group.name),
        }),
      ),
    ),
  );
  body.replaceChildren(...rows);
  $("groups-empty").hidden = list.length !== 0;
  // The list is rebuilt: give focus back to the same row's button if it had it.
  if (focused && focusedAction) {
    body
      .querySelector(`tr[data-group="${CSS.escape(focused)}"] [data-action="${focusedAction}"]`)
      ?.focus();
  }
}

function fill(group) {
  $("group-name").value = group.name;
  $("group-selector").value = group.selector ?? "";
  $("group-priority").value = String(group.priority ?? 0);
  $("group-config").value = JSON.stringify(group.config ?? {}, null, 2);
}

// Edit puts the group, read again with how many workers it selects now, in the form.
async function editGroup(group) {
  clearForm();
  editing = group.name;
  fill(group);
  $("group-name").focus();
  announce(`Group ${group.name} is in the form: change it and save.`);
  try {
    const data = await api("GET", `/infra/config/groups/${encodeURIComponent(group.name)}`);
    if (editing !== group.name || !data) return;
    fill(data);
    if (typeof data.selected === "number") {
      setText($("group-selected"), `Its selector selects ${workers(data.selected)} now.`);
    }
  } catch (err) {
    if (err.status !== 401 && editing === group.name) {
      setText($("group-form-error"), `Could not read group ${group.name}: ${err.message}`);
    }
  }
}

async function deleteGroup(name) {
  const ok = await confirmAction({
    title: `Delete group ${name}?`,
    text: "The workers it selects lose the keys it gave them (unless another group or their own config sets them) and get a new revision.",
    action: "Delete",
  });
  if (!ok) return;
  try {
    const data = await api("DELETE", `/infra/config/groups/${encodeURIComponent(name)}`);
    setText($("groups-outcome"), `Group ${name} deleted: ${effect(data?.reconfigured)}`);
    if (editing === name) editing = "";
  } catch (err) {
    if (err.status !== 401) setText($("groups-error"), `Could not delete group ${name}: ${err.message}`);
  }
  await refreshGroups();
  // The deleted row's button is gone: focus goes to the list's heading.
  if (!known.has(name)) $("group-list-title").focus();
}
