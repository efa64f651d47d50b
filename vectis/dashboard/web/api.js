// Calls to the dashboard's JSON API with the session cookie and the CSRF header.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
  }
}

let csrf = "";
let onUnauthorized = () => {};

export function setCsrf(token) {
  csrf = token || "";
}

// Called when a session expires mid-use, so the page can show the login form again.
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

const SAFE = new Set(["GET", "HEAD"]);

export async function api(method, path, body, { quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!SAFE.has(method) && csrf) headers["X-Vectis-CSRF"] = csrf;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      // GETs revalidate: the dashboard answers 304 to an unchanged list or summary.
      cache: SAFE.has(method) ? "no-cache" : "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "The dashboard did not answer; check the connection.");
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const code = data && typeof data.error === "string" ? data.error : "";
    const message = data && typeof data.message === "string" ? data.message : "";
    if (response.status === 401 && !quiet401) onUnauthorized();
    throw new ApiError(response.status, code, message || describeStatus(response.status));
  }
  return data;
}

function describeStatus(status) {
  if (status === 401) return "Not signed in, or the session expired.";
  if (status === 403) return "The dashboard refused the request.";
  if (status === 404) return "Not found.";
  if (status === 429) return "Too many attempts; wait a minute and try again.";
  if (status >= 500) return `The dashboard failed (HTTP ${status}).`;
  return `The request failed (HTTP ${status}).`;
}
