// Small DOM helpers shared by the pages. Text always goes in as text, never as HTML.

/** Build an element: h("button", {type: "button", onclick: fn}, "Save"). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value" || key === "checked" || key === "selected") el[key] = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace the content of `el`. */
export function setContent(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A status line for errors and notices; `show(error)` puts the server's words in it. */
export function statusLine() {
  const el = h("p", { class: "status", role: "status", "aria-live": "polite" });
  el.show = (message, kind = "info") => {
    el.textContent = message;
    el.className = `status ${kind}`;
    el.setAttribute("role", kind === "error" ? "alert" : "status");
  };
  el.error = (err) => el.show(err && err.message ? err.message : String(err), "error");
  el.clear = () => el.show("");
  return el;
}

/** Run `action` (a list reload); a failure goes to `status`, which otherwise keeps showing
 * what the last user action said (unlike run(), which clears it first). */
export async function reload(status, action) {
  try {
    await action();
  } catch (err) {
    status.error(err);
  }
}

/** Run `action` while `button` is disabled; errors go to `status` (a statusLine). */
export async function run(button, status, action) {
  if (button) button.disabled = true;
  if (status) status.clear();
  try {
    return await action();
  } catch (err) {
    if (status) status.error(err);
    else throw err;
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** Parse JSON typed by the user; the error names the field. */
export function parseJson(text, label) {
  const trimmed = text.trim();
  if (trimmed === "") return {};
  try {
    return JSON.parse(trimmed);
  } catch (err) {
    throw new Error(`${label} is not valid JSON: ${err.message}`);
  }
}

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

/** A labelled form field; returns {row, input}. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const row = h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
  return { row, input };
}

/** A table: columns are [{title, cell(row) -> node|string}]. */
export function table(columns, rows, caption) {
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.title)));
  const body = rows.map((row) => h("tr", {}, columns.map((c) => h("td", { "data-label": c.title }, c.cell(row)))));
  return h(
    "div",
    { class: "table-wrap" },
    h("table", { class: "stack" }, caption ? h("caption", {}, caption) : null, h("thead", {}, head), h("tbody", {}, body)),
  );
}

/** Previous/next paging: state {skip, top, count}; onChange(skip). */
export function pager(state, onChange) {
  const { skip, top, count, shown } = state;
  const last = skip + shown;
  const total = count === undefined || count === null ? "" : ` of ${count}`;
  const label = shown ? `${skip + 1}–${last}${total}` : `none${total}`;
  const hasNext = count === undefined || count === null ? shown === top : last < count;
  return h(
    "nav",
    { class: "pager", "aria-label": "pages" },
    h("button", { type: "button", disabled: skip === 0, onclick: () => onChange(Math.max(0, skip - top)) }, "Previous"),
    h("span", { class: "range" }, label),
    h("button", { type: "button", disabled: !hasNext, onclick: () => onChange(skip + top) }, "Next"),
  );
}

export function formatDate(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

/** A link to a route: link("entity", {c: "entities", id}, "open"). */
export function link(page, params, text) {
  return h("a", { href: href(page, params) }, text);
}

export function href(page, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ""));
  const tail = query.toString();
  return `#/${page}${tail ? `?${tail}` : ""}`;
}

/** Escape text for use inside a regular expression. */
export function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * Keep a list live: watch `collection` (`options` as the watch command takes them, e.g.
 * aggregates) and call `reload` 250 ms after the last change. `live` (a <p>) says whether the
 * list is live; the watch ends when the page is left.
 */
export async function followLive(ctx, live, collection, reload, options) {
  let timer = null;
  try {
    const stop = await ctx.api.watch(
      collection,
      () => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          live.textContent = `Updated ${new Date().toLocaleTimeString()}: the list follows changes live.`;
          reload();
        }, 250);
      },
      options,
    );
    live.textContent = "The list follows changes live.";
    ctx.onLeave(() => {
      clearTimeout(timer);
      return stop();
    });
  } catch (err) {
    live.textContent = `Not live: ${err.message}`;
    live.className = "muted";
  }
}

/** A file name to save as: the last part of `name`, without characters a file system or the
 * browser reads specially; "download" when nothing is left. */
export function saveName(name) {
  const last = String(name ?? "").split(/[\\/]/).pop() || "";
  const clean = last.replace(/[\u0000-\u001f\u007f"*:<>?|]/g, "_").replace(/^\.+/, "").trim();
  return clean || "download";
}

/**
 * Download file `id` with the signed-in token (GET /download/<id>) and save it: the one way the
 * UI hands a user's upload to the browser. The bytes become an application/octet-stream blob
 * and the link always carries `download`, so an uploaded page or script is saved, never opened
 * on this origin (where it would run with the UI's rights).
 */
export async function saveDownload(api, id, filename) {
  const response = await api.http(`/download/${encodeURIComponent(id)}`);
  const blob = new Blob([await response.arrayBuffer()], { type: "application/octet-stream" });
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: saveName(filename) });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}
