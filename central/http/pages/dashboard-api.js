// The dashboard's link to central: the admin's bearer token (kept in sessionStorage, never in a
// URL), JSON requests, authenticated downloads, and the SSE stream read with fetch() because
// EventSource cannot send an Authorization header.

const KEY = "roomproof-token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
}

function headers(extra) {
  return {Authorization: "Bearer " + token(), ...(extra || {})};
}

async function failure(response) {
  let code = "http_" + response.status, message = response.statusText || "request failed", details = {};
  try {
    const body = await response.json();
    if (body && body.error) ({code, message, details} = body.error);
  } catch (error) { /* not JSON */ }
  return new ApiError(response.status, code, `${message} (${code})`, details);
}

export async function get(path) {
  const response = await fetch(path, {headers: headers(), cache: "no-store"});
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function send(method, path, body, contentType) {
  const response = await fetch(path, {
    method, body, headers: headers({"Content-Type": contentType || "application/json"}),
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Fetch with the token, then hand the bytes to the browser as a file via a blob link. */
export async function download(path, fallbackName) {
  const response = await fetch(path, {headers: headers(), cache: "no-store"});
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const name = match ? match[1] : fallbackName;
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return name;
}

/** Reads /api/v1/events until stopped; reconnects with backoff. onEvent(kind, data). */
export function stream(onEvent, onState) {
  const control = new AbortController();
  let delay = 1000;
  async function once() {
    const response = await fetch("/api/v1/events", {
      headers: headers({Accept: "text/event-stream"}), signal: control.signal, cache: "no-store",
    });
    if (!response.ok) throw await failure(response);
    onState(true);
    delay = 1000;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message", data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) kind = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).trim();
        }
        if (data) {
          try { onEvent(kind, JSON.parse(data)); } catch (error) { console.error(error); }
        }
      }
    }
  }
  (async () => {
    while (!control.signal.aborted) {
      try {
        await once();
      } catch (error) {
        if (control.signal.aborted) return;
        onState(false, error);
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return;
      }
      onState(false);
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 30_000);
    }
  })();
  return () => control.abort();
}
