// One document: edit it as JSON, delete it, edit its ACL, and compare versions from its history.
import { aclEditor } from "../../acl.js";
import { diff, renderDiff } from "../../diff.js";
import { registerPage } from "../../registry.js";
import { field, formatDate, h, href, link, parseJson, pretty, run, setContent, statusLine, table } from "../../ui.js";
import { label } from "./entities.js";

const TABS = [
  { id: "doc", title: "Document" },
  { id: "acl", title: "ACL" },
  { id: "history", title: "History" },
];

/** Read one document by id; null when it does not exist or the user may not read it. */
export async function readDocument(api, collectionname, id) {
  const reply = await api.call("query", { collectionname, query: { _id: id }, top: 1 });
  return (reply.result || [])[0] || null;
}

function tabs(collection, id, current) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "document views" },
    TABS.map((t) => h("a", { href: href("entity", { c: collection, id, tab: t.id }), "aria-current": t.id === current ? "page" : false }, t.title)),
  );
}

function editor(ctx, collection, doc) {
  const status = statusLine();
  const isNew = !doc._id;
  const text = h("textarea", { class: "json", name: "document", spellcheck: "false" }, pretty(doc));
  const save = h("button", { type: "submit", class: "primary" }, isNew ? "Create" : "Save");
  const form = h("form", {}, field("Document (JSON)", text).row, h("div", { class: "actions" }, save), status);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(save, status, async () => {
      const item = parseJson(text.value, "Document");
      if (isNew) {
        const reply = await ctx.api.call("insertone", { collectionname: collection, item });
        ctx.navigate("entity", { c: collection, id: reply.result._id, created: "1" });
        return;
      }
      const reply = await ctx.api.call("updateone", { collectionname: collection, item });
      text.value = pretty(reply.result);
      status.show(`Saved as version ${reply.result._version}.`, "ok");
    });
  });
  if (!isNew) {
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", () => {
      if (!window.confirm(`Delete ${label(doc)} from ${collection}? It can be restored from Deleted documents.`)) return;
      run(remove, status, async () => {
        await ctx.api.call("deleteone", { collectionname: collection, id: doc._id });
        ctx.navigate("entities", { c: collection });
      });
    });
    form.querySelector(".actions").append(remove);
  }
  return form;
}

async function history(ctx, collection, doc) {
  const { api } = ctx;
  const box = h("div", {});
  const status = statusLine();
  const reply = await api.call("query", {
    collectionname: `${collection}_hist`,
    query: { id: doc._id },
    projection: { _version: 1, _modified: 1, _modifiedby: 1, reason: 1, _deleted: 1, _restored: 1 },
    orderby: { _version: -1 },
    top: 500,
  });
  const records = reply.result || [];
  const current = Number(doc._version || 0);
  const versions = [];
  for (let v = current; v >= 0; v--) versions.push(v);
  const from = h("select", { name: "from" }, versions.map((v) => h("option", { value: v, selected: v === Math.max(0, current - 1) }, String(v))));
  const to = h("select", { name: "to" }, versions.map((v) => h("option", { value: v, selected: v === current }, String(v))));
  const compare = h("button", { type: "submit", class: "primary" }, "Compare");
  const result = h("div", { class: "card", "aria-live": "polite" });
  const form = h(
    "form",
    { class: "row" },
    field("From version", from).row,
    field("To version", to).row,
    compare,
  );
  const versionOf = (v) => api.call("getdocumentversion", { collectionname: collection, id: doc._id, version: v }).then((r) => r.result);
  async function show() {
    const [a, b] = await Promise.all([versionOf(Number(from.value)), versionOf(Number(to.value))]);
    setContent(result, h("h2", {}, `Changes from version ${from.value} to ${to.value}`), renderDiff(diff(a, b)));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(compare, status, show);
  });
  box.append(
    table(
      [
        { title: "Version", cell: (r) => String(r._version) },
        { title: "When", cell: (r) => formatDate(r._deleted || r._modified) },
        { title: "By", cell: (r) => r._modifiedby || "" },
        { title: "Note", cell: (r) => [r.reason || "", r._deleted ? " deleted" : "", r._restored ? " restored" : ""].join("").trim() },
      ],
      records,
      `${records.length} history record${records.length === 1 ? "" : "s"}; the current version is ${current}`,
    ),
    h("h2", {}, "Compare versions"),
    form,
    status,
    result,
  );
  if (current > 0) await run(null, status, show);
  return box;
}

registerPage({
  id: "entity",
  title: "Document",
  nav: false,
  parent: "entities",
  async render(ctx) {
    const { api, params } = ctx;
    const collection = params.get("c") || "entities";
    const id = params.get("id");
    const tab = params.get("tab") || "doc";
    const back = link("entities", { c: collection }, `← ${collection}`);
    if (params.get("new")) {
      ctx.heading(`New document in ${collection}`);
      ctx.main.append(h("p", {}, back), editor(ctx, collection, { name: "", _type: "" }));
      return;
    }
    const doc = await readDocument(api, collection, id);
    if (!doc) {
      ctx.heading("Document");
      ctx.main.append(h("p", {}, back), h("p", { class: "status error", role: "alert" }, `No document ${id} in ${collection} that you may read.`));
      return;
    }
    ctx.heading(String(label(doc)));
    ctx.main.append(h("p", {}, back, " · ", h("code", {}, doc._id), ` · version ${doc._version ?? 0}`), tabs(collection, id, tab));
    if (params.get("created")) ctx.main.append(h("p", { class: "status ok", role: "status" }, "Created."));
    if (tab === "acl") {
      ctx.main.append(
        aclEditor(api, doc._acl, async (acl) => {
          const reply = await api.call("updateone", { collectionname: collection, item: { ...doc, _acl: acl } });
          Object.assign(doc, reply.result);
          return reply.result._acl;
        }),
      );
    } else if (tab === "history") {
      ctx.main.append(await history(ctx, collection, doc));
    } else {
      ctx.main.append(editor(ctx, collection, doc));
    }
  },
});
