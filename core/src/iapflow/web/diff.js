// The difference between two versions of a document, field by field.
import { h } from "./ui.js";

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Changes from `before` to `after`: [{path, kind: "added"|"removed"|"changed", before, after}]. */
export function diff(before, after, path = []) {
  if (same(before, after)) return [];
  if (isObject(before) && isObject(after)) {
    const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
    return keys.flatMap((key) => {
      if (!(key in after)) return [{ path: [...path, key], kind: "removed", before: before[key] }];
      if (!(key in before)) return [{ path: [...path, key], kind: "added", after: after[key] }];
      return diff(before[key], after[key], [...path, key]);
    });
  }
  if (Array.isArray(before) && Array.isArray(after) && before.length === after.length) {
    return before.flatMap((item, index) => diff(item, after[index], [...path, index]));
  }
  return [{ path, kind: "changed", before, after }];
}

function pathText(path) {
  return path.length ? path.map((p) => (typeof p === "number" ? `[${p}]` : p)).join(".").replace(/\.\[/g, "[") : "(whole document)";
}

/** A list showing each change, removed values struck through and added ones marked. */
export function renderDiff(changes) {
  if (!changes.length) return h("p", { class: "muted" }, "The two versions are the same.");
  return h(
    "ul",
    { class: "diff", "aria-label": "changes" },
    changes.map((c) =>
      h(
        "li",
        { class: c.kind },
        h("span", { class: "path" }, pathText(c.path)),
        ": ",
        c.kind !== "added" ? h("del", {}, JSON.stringify(c.before)) : null,
        c.kind === "changed" ? " → " : null,
        c.kind !== "removed" ? h("ins", {}, JSON.stringify(c.after)) : null,
      ),
    ),
  );
}
