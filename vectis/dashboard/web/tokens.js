// Enrollment tokens: create (shown once, with the install command), list, revoke.

import { api } from "./api.js";
import { confirmAction } from "./confirm.js";
import { $, absolute, announce, h, parseTime, setText, until } from "./dom.js";

export function initTokens() {
  $("token-form").addEventListener("submit", createToken);
  $("created-done").addEventListener("click", hideCreated);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", () => copyFrom(button.dataset.copy));
  }
}

function shellWord(text) {
  return /^[A-Za-z0-9._~:/@%+=,-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

export function installCommand(token, origin = location.origin) {
  const url = shellWord(origin);
  // The token goes through the environment, never on sudo's command line (seen in ps).
  return (
    `export VECTIS_TOKEN=${shellWord(token)} VECTIS_DASHBOARD_URL=${url}; ` +
    `curl -fsSL ${url}/install.sh | sudo --preserve-env=VECTIS_TOKEN,VECTIS_DASHBOARD_URL bash`
  );
}

// The new token lives in the page only until Done, leaving the view, or logging out.
export function forgetCreatedToken() {
  $("created-token").value = "";
  $("created-command").value = "";
  setText($("copy-outcome"), "");
  $("token-created").hidden = true;
}

function hideCreated() {
  forgetCreatedToken();
  $("token-description").focus();
}

async function createToken(event) {
  event.preventDefault();
  const error = $("token-form-error");
  setText(error, "");
  const body = {};
  const description = $("token-description").value.trim();
  if (description) body.description = description;
  const expiry = $("token-expiry").value;
  if (expiry) body.expires_in = Number(expiry);
  const usesText = $("token-uses").value.trim();
  const usesInput = $("token-uses");
  usesInput.removeAttribute("aria-invalid");
  if (usesText) {
    const uses = Number(usesText);
    if (!Number.isInteger(uses) || uses < 1) {
      usesInput.setAttribute("aria-invalid", "true");
      setText(error, "Maximum uses must be a whole number of at least 1, or empty for unlimited.");
      usesInput.focus();
      return;
    }
    body.max_uses = uses;
  }
  try {
    const data = await api("POST", "/infra/tokens", body);
    const token = typeof data?.token === "string" ? data.token : "";
    if (!token) throw new Error("the dashboard did not return a token");
    $("created-token").value = token;
    $("created-command").value = installCommand(token);
    setText($("copy-outcome"), "");
    $("token-created").hidden = false;
    $("created-title").focus();
    $("token-form").reset();
    announce("Token created. Copy it now: it is shown only once.");
    await refreshTokens();
  } catch (err) {
    if (err.status !== 401) setText(error, `Could not create the token: ${err.message}`);
  }
}

async function copyFrom(id) {
  const field = $(id);
  const outcome = $("copy-outcome");
  try {
    if (!navigator.clipboard) throw new Error("no clipboard API");
    await navigator.clipboard.writeText(field.value);
  } catch {
    // Plain HTTP off localhost has no clipboard API: fall back to a selection copy.
    field.focus();
    field.select();
    if (!document.execCommand("copy")) {
      setText(outcome, "Copy failed: the text is selected, press Ctrl+C.");
      return;
    }
  }
  setText(outcome, id === "created-token" ? "Token copied." : "Install command copied.");
}

function tokenState(token) {
  if (typeof token.state === "string" && token.state) return token.state.replaceAll("_", " ");
  if (token.revoked || token.revoked_at) return "revoked";
  const expires = parseTime(token.expires_at);
  if (expires !== null && expires <= Date.now()) return "expired";
  const max = token.max_uses;
  if (typeof max === "number" && typeof token.uses === "number" && token.uses >= max) return "used up";
  return "active";
}

export async function refreshTokens() {
  try {
    const data = await api("GET", "/infra/tokens");
    const list = Array.isArray(data?.tokens) ? data.tokens : Array.isArray(data) ? data : [];
    render(list.filter((t) => t && t.id !== undefined));
    setText($("tokens-error"), "");
  } catch (err) {
    if (err.status !== 401) setText($("tokens-error"), `Could not load the tokens: ${err.message}`);
  }
}

function render(list) {
  const body = $("token-rows");
  const focusedId = document.activeElement?.closest?.("tr")?.dataset.tokenId;
  const rows = list.map((token) => {
    const id = String(token.id);
    const state = tokenState(token);
    const uses = `${token.uses ?? 0}${typeof token.max_uses === "number" ? ` / ${token.max_uses}` : ""}`;
    const revoke =
      state === "revoked"
        ? ""
        : h("button", {
            type: "button",
            class: "danger small",
            text: "Revoke",
            "aria-label": `Revoke token ${token.description || id}`,
            onclick: () => revokeToken(token),
          });
    return h(
      "tr",
      { dataset: { tokenId: id }, class: `token-${state.replaceAll(" ", "-")}` },
      h("td", { class: "mono", text: token.prefix ? `${token.prefix}…` : id }),
      h("td", { text: token.description || "–" }),
      h("td", { title: absolute(token.created_at), text: token.created_at ? absolute(token.created_at) : "–" }),
      h("td", { title: absolute(token.expires_at), text: until(token.expires_at) }),
      h("td", { text: uses }),
      h("td", {}, h("span", { class: `state state-${state.replaceAll(" ", "-")}`, text: state })),
      h("td", {}, revoke),
    );
  });
  body.replaceChildren(...rows);
  $("tokens-empty").hidden = list.length !== 0;
  // The list is rebuilt: give focus back to the same row's button if it had it.
  if (focusedId) body.querySelector(`tr[data-token-id="${CSS.escape(focusedId)}"] button`)?.focus();
}

async function revokeToken(token) {
  const label = token.description || String(token.id);
  const ok = await confirmAction({
    title: `Revoke token ${label}?`,
    text: "Servers can no longer register with it. Workers already registered are not affected.",
    action: "Revoke",
  });
  if (!ok) return;
  try {
    await api("DELETE", `/infra/tokens/${encodeURIComponent(String(token.id))}`);
    setText($("tokens-outcome"), `Token ${label} revoked.`);
  } catch (err) {
    setText($("tokens-error"), `Could not revoke: ${err.message}`);
  }
  await refreshTokens();
}
