// A client of iapflow's JSON websocket protocol (docs/protocol-json.md), the same API every
// other client uses. The UI reaches the server only through this module and the HTTP file
// routes, with the token of the signed-in user.

const TOKEN_KEY = "iapflow.jwt";
const CLIENT_AGENT = "iapflow-web";

/** A refusal from the server; `message` is the server's text, unchanged. */
export class ApiError extends Error {
  constructor(message, data = {}) {
    super(message);
    this.name = "ApiError";
    this.data = data;
  }
}

/** The websocket address of this server's JSON protocol. */
export function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class Api extends EventTarget {
  constructor(url = defaultUrl()) {
    super();
    this.url = url;
    this.ws = null;
    this.user = null;
    this.packageSize = 25000;
    this.seq = 0;
    this.pending = new Map(); // request id -> {resolve, reject, command}
    this.pieces = new Map(); // message id -> {count, parts}
    this.watches = new Map(); // watch id -> callback(change)
    this.opening = null;
  }

  /** The stored token of this browser tab, or "". */
  get jwt() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Open the websocket (once); resolves when it is open. */
  connect() {
    if (this.connected) return Promise.resolve();
    if (this.opening) return this.opening;
    this.opening = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this.ws = ws;
        this.opening = null;
        resolve();
      };
      ws.onmessage = (event) => this.receive(event.data);
      ws.onclose = (event) => {
        this.opening = null;
        if (this.ws === ws) this.ws = null;
        const why = event.reason ? `: ${event.reason}` : "";
        const error = new ApiError(`connection closed (code ${event.code}${why})`);
        for (const { reject: fail } of this.pending.values()) fail(error);
        this.pending.clear();
        this.pieces.clear();
        this.watches.clear();
        if (!opened) reject(new ApiError(`cannot connect to ${this.url}`));
        else this.dispatchEvent(new CustomEvent("close", { detail: { code: event.code, reason: event.reason } }));
      };
    });
    return this.opening;
  }

  /** Close the connection on purpose (no "close" event). */
  disconnect() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000, "signed out");
    }
    for (const { reject } of this.pending.values()) reject(new ApiError("connection closed"));
    this.pending.clear();
    this.watches.clear();
  }

  /** Send `command` with `data`; resolves with the reply's data, rejects with ApiError. */
  async call(command, data = {}) {
    await this.connect();
    const id = String(++this.seq);
    const text = JSON.stringify(data);
    const reply = new Promise((resolve, reject) => this.pending.set(id, { resolve, reject, command }));
    const size = this.packageSize;
    const count = Math.max(1, Math.ceil(text.length / size));
    for (let index = 0; index < count; index++) {
      const piece = text.slice(index * size, (index + 1) * size);
      this.ws.send(JSON.stringify({ id, replyto: null, command, data: piece, count, index }));
    }
    return reply;
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    const count = frame.count || 1;
    let data = frame.data || "";
    if (count > 1) {
      const entry = this.pieces.get(frame.id) || { count, parts: new Map() };
      entry.parts.set(frame.index || 0, data);
      this.pieces.set(frame.id, entry);
      if (entry.parts.size < count) return;
      this.pieces.delete(frame.id);
      data = [...entry.parts.keys()].sort((a, b) => a - b).map((k) => entry.parts.get(k)).join("");
    }
    let body = {};
    try {
      body = data ? JSON.parse(data) : {};
    } catch {
      body = {};
    }
    if (frame.replyto !== null && frame.replyto !== undefined) {
      const waiter = this.pending.get(String(frame.replyto));
      if (!waiter) return;
      this.pending.delete(String(frame.replyto));
      if (frame.command === "error") waiter.reject(new ApiError(body.message || body.error || "error", body));
      else waiter.resolve(body);
      return;
    }
    this.push(frame, body);
  }

  push(frame, body) {
    if (frame.command === "watchevent") {
      const callback = this.watches.get(body.id);
      if (callback) callback(body.result);
    } else if (frame.command === "refreshtoken" && body.jwt) {
      sessionStorage.setItem(TOKEN_KEY, body.jwt);
      if (body.user) this.user = body.user;
    }
    this.dispatchEvent(new CustomEvent("push", { detail: { command: frame.command, id: frame.id, data: body } }));
  }

  /** Sign in with {username, password} or {jwt}; keeps the token for this tab. */
  async signin(credentials) {
    const reply = await this.call("signin", { ...credentials, clientagent: CLIENT_AGENT });
    sessionStorage.setItem(TOKEN_KEY, reply.jwt);
    this.user = reply.user;
    this.info = reply;
    if (reply.websocket_package_size) this.packageSize = reply.websocket_package_size;
    this.dispatchEvent(new CustomEvent("signin", { detail: reply.user }));
    return reply.user;
  }

  /** Sign in again with the stored token; null when there is none. Rejects if it is refused. */
  async resume() {
    const jwt = this.jwt;
    if (!jwt) return null;
    try {
      return await this.signin({ jwt });
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw error;
    }
  }

  /** Act as another user (signin with impersonate): needs update right on that user. */
  impersonate(userId) {
    return this.signin({ jwt: this.jwt, impersonate: userId });
  }

  /** Back to the real user after impersonate(). */
  stopImpersonating() {
    return this.signin({ jwt: this.jwt, impersonate: "-1" });
  }

  /** Forget the token and close the connection: the server ends the session with it. */
  signout() {
    sessionStorage.removeItem(TOKEN_KEY);
    this.user = null;
    this.disconnect();
    this.dispatchEvent(new CustomEvent("signout"));
  }

  /** True when the signed-in user is in the admins role (for hints only: the server decides). */
  get isAdmin() {
    return Boolean(this.user && (this.user.roles || []).some((r) => r._id === "5a1702fa245d9013697656fb"));
  }

  /** Watch `collectionname`; `onChange(change)` gets each change. Resolves with a stop function. */
  async watch(collectionname, onChange, options = {}) {
    const reply = await this.call("watch", { collectionname, ...options });
    this.watches.set(reply.id, onChange);
    return async () => {
      if (!this.watches.delete(reply.id) || !this.connected) return;
      try {
        await this.call("unwatch", { id: reply.id });
      } catch {
        // the watch ends with the connection anyway
      }
    };
  }

  /** An HTTP request to the file routes with the token; rejects with the server's message. */
  async http(path, options = {}) {
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${this.jwt}` };
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        const body = await response.json();
        message = body.message || body.error || message;
      } catch {
        // not JSON: keep the status line
      }
      throw new ApiError(message, { status: response.status });
    }
    return response;
  }
}

export const api = new Api();
