// The server's API as the console uses it: the API key, JSON and text
// requests, readable errors, and server-sent events.

const KEY_ITEM = 'gptoss.apiKey';

export function getKey() {
  try {
    return localStorage.getItem(KEY_ITEM) || '';
  } catch {
    return ''; // storage disabled: no key kept
  }
}

export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_ITEM, key);
    else localStorage.removeItem(KEY_ITEM);
  } catch {
    // storage disabled: the key lives until the page closes
  }
}

// authHeaders carries the key, when there is one, as the API expects it.
export function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// APIError is a failed call, with what the server said about it.
export class APIError extends Error {
  constructor({ status = 0, statusText = '', message, code = '', requestId = '', retryAfter = '' }) {
    super(message);
    this.name = 'APIError';
    Object.assign(this, { status, statusText, code, requestId, retryAfter });
  }

  // describe is one readable sentence or two: the status, the server's
  // message, and what to do about it.
  describe() {
    const head = this.status ? `${this.status} ${this.statusText || statusName(this.status)}` : this.statusText || 'Network error';
    let text = `${head}: ${this.message}`;
    if (this.status === 401) text += ' Enter a valid key under "API key" (top right).';
    else if (this.retryAfter) text += ` Try again in ${this.retryAfter} s.`;
    if (this.requestId) text += ` (request ${this.requestId})`;
    return text;
  }
}

function statusName(status) {
  return { 400: 'Bad Request', 401: 'Unauthorized', 404: 'Not Found', 413: 'Payload Too Large',
    429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
    504: 'Gateway Timeout' }[status] || '';
}

// errorFrom reads an error response: OpenAI's error object when the body
// is one, the body's text otherwise.
export async function errorFrom(resp) {
  let message = '';
  let code = '';
  const text = await resp.text().catch(() => '');
  try {
    const err = JSON.parse(text).error;
    message = err.message || '';
    code = err.code || '';
  } catch {
    message = text.trim().slice(0, 300);
  }
  return new APIError({
    status: resp.status, statusText: resp.statusText, message: message || 'no details',
    code, requestId: resp.headers.get('X-Request-Id') || '', retryAfter: resp.headers.get('Retry-After') || '',
  });
}

async function call(path, init = {}) {
  let resp;
  try {
    resp = await fetch(path, { cache: 'no-store', ...init });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new APIError({ message: `the server could not be reached (${e.message}).` });
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp;
}

export async function getJSON(path, init) {
  return (await call(path, { headers: { Accept: 'application/json' }, ...init })).json();
}

export async function getText(path, init) {
  return (await call(path, init)).text();
}

// post posts body as JSON with the key and returns the response; a
// stream's body is read with readEvents.
export function post(path, body, signal) {
  return call(path, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json', Accept: body.stream ? 'text/event-stream' : 'application/json', ...authHeaders(),
    },
    body: JSON.stringify(body),
    signal,
  });
}

// readEvents yields the data of each server-sent event of a response, as
// the events arrive (a stream ends with "[DONE]", which is yielded too).
export async function* readEvents(resp) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        let line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          // A blank line ends an event.
          if (data.length) yield data.join('\n');
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(line[5] === ' ' ? 6 : 5));
        }
        // Comments (":") and other fields (event, id, retry) are not used.
      }
    }
    if (data.length) yield data.join('\n');
  } finally {
    reader.releaseLock();
  }
}
