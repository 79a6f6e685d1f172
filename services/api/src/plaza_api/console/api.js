// The manager API, as the console calls it: the credential from sessionStorage as
// `Authorization: Bearer` (never in a URL), JSON in and out, and every error as an ApiError
// carrying the problem+json's detail, which the page shows where the user acted.

import { t } from "./i18n.js";

const TOKEN_KEY = "plaza.console.token";

// Statuses the console says in its own language: the gateway's detail of them (English) says
// nothing a user can act on beyond "sign in again", "wait" or "try again", and a Spanish
// town's mayor met it as English in the middle of a Spanish page.
const OWN_WORDS = new Set([401, 429, 500, 503]);

export class ApiError extends Error {
  constructor(status, problem) {
    const detail =
      problem && typeof problem.detail === "string"
        ? problem.detail
        : problem && problem.detail !== undefined
          ? JSON.stringify(problem.detail)
          : t("api.noReason", { status });
    super(detail);
    this.status = status;
    this.problem = problem || {};
    this.detail = detail;
  }
}

export const credential = {
  get() {
    return sessionStorage.getItem(TOKEN_KEY);
  },
  set(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
  },
  clear() {
    sessionStorage.removeItem(TOKEN_KEY);
  },
};

let unauthorized = () => {};

/** Called with the ApiError of any 401 on a call made with the credential (expired or revoked
 * token, disabled user): the console then asks to sign in again. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** One call: {data, etag, status, headers}, or an ApiError. `body` is sent as JSON, `form`
 * form-encoded; `ifMatch` makes an action conditional on the version read; `accept` another type
 * than JSON (the report's text/csv), whose answer's `data` is its text. */
export async function call(path, { method = "GET", body, form, ifMatch, auth = true, accept } = {}) {
  const headers = { Accept: `${accept || "application/json"}, application/problem+json` };
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
  if (auth) {
    const token = credential.get();
    if (!token) {
      const error = new ApiError(401, { detail: t("api.notSignedIn") });
      unauthorized(error);
      throw error;
    }
    headers.Authorization = `Bearer ${token}`;
  }
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  } else if (form !== undefined) {
    init.body = new URLSearchParams(form);
  }
  if (ifMatch) headers["If-Match"] = ifMatch;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, { detail: t("api.unreachable", { message: error.message }) });
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json")
    ? await response.json().catch(() => null)
    : accept && response.ok
      ? await response.text()
      : null;
  if (!response.ok) {
    const status = response.status;
    const own = OWN_WORDS.has(status)
      ? { detail: t(`api.status.${status}`, { seconds: response.headers.get("Retry-After") || "5" }) }
      : {};
    const error = new ApiError(status, data || own.detail ? { ...(data || {}), ...own } : data);
    if (response.status === 401 && auth) unauthorized(error);
    throw error;
  }
  return { data, etag: response.headers.get("ETag"), status: response.status, headers: response.headers };
}

/** A query string from the non-empty values of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/** Reads a Server-Sent Events stream with the credential as `Authorization: Bearer` (what the
 * browser's EventSource cannot send, and the API wants in no URL here): fetch() and its body's
 * ReadableStream. `onOpen()` once the answer is a 200, then `onEvent({id, event, data})` for
 * each event (`retry:` fields go to `onRetry(ms)`); resolves when the server ends the stream,
 * rejects with an ApiError for an answer that is not a 200 (a 401 signs out, as for any call) or
 * a connection lost, and with an AbortError when `signal` aborts. */
export async function stream(path, { lastEventId, signal, onOpen = () => {}, onEvent, onRetry = () => {} }) {
  const token = credential.get();
  if (!token) {
    const error = new ApiError(401, { detail: t("api.notSignedIn") });
    unauthorized(error);
    throw error;
  }
  const headers = { Accept: "text/event-stream", Authorization: `Bearer ${token}` };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  let response;
  try {
    response = await fetch(path, { headers, signal, credentials: "omit", cache: "no-store", redirect: "error" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, { detail: t("api.unreachable", { message: error.message }) });
  }
  if (!response.ok) {
    const type = response.headers.get("content-type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    const error = new ApiError(response.status, data);
    error.retryAfter = Number(response.headers.get("Retry-After")) || null;
    if (response.status === 401) unauthorized(error);
    throw error;
  }
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, { detail: t("api.unreachable", { message: error.message }) });
    }
    if (chunk.done) return;
    buffer += chunk.value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // a comment: "connected", "keep-alive"
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") event.data.push(value);
        else if (name === "id") event.id = value;
        else if (name === "event") event.event = value;
        else if (name === "retry" && /^\d+$/.test(value)) onRetry(Number(value));
      }
      if (event.data.length) onEvent({ ...event, data: event.data.join("\n") });
    }
  }
}
