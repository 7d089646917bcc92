// The dashboard's one door to the cluster: the public REST API, with the operator's bearer token
// (kept in sessionStorage: it dies with the tab). Every error becomes an ApiError carrying the API's
// own message, so the operator reads what the server said.

const KEY = "df-dashboard-token";
// The replica's root, from wherever the page is served (a path prefix of a proxy is kept).
const ROOT = new URL("../", new URL(".", document.baseURI));

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function messageOf(status, statusText, data) {
  if (data && typeof data === "object" && !Array.isArray(data)) {
    const text = data.message || data.msg || data.detail;
    if (text) return `${status}: ${text}`;
  }
  if (typeof data === "string" && data.trim()) return `${status}: ${data.trim().slice(0, 300)}`;
  return `${status}: ${statusText || "request failed"}`;
}

// Calls per path since the page loaded: the page's own load on the cluster, shown in the footer.
export const stats = { calls: 0, bytes: 0 };

export async function api(path, { method = "GET", body, query } = {}) {
  const url = new URL(path.replace(/^\//, ""), ROOT);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  const headers = { Accept: "application/json" };
  const secret = token.get();
  if (secret) headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method, headers, cache: "no-store", body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (err) {
    throw new ApiError(0, `cannot reach the supernode: ${err.message}`);
  }
  const text = await response.text();
  stats.calls += 1;
  stats.bytes += text.length;
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) throw new ApiError(response.status, messageOf(response.status, response.statusText, data));
  return data;
}
