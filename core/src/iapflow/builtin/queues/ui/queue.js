// One queue or exchange claim from `mq`: its document, its ACL (who may consume and send, see
// docs/queues.md) and deleting the claim. Work item queues open on their own page instead.
import { aclEditor } from "../../acl.js";
import { registerPage } from "../../registry.js";
import { formatDate, h, href, link, pretty, run, statusLine } from "../../ui.js";

const TABS = [
  { id: "doc", title: "Document" },
  { id: "acl", title: "ACL" },
];

function tabs(id, current) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "queue views" },
    TABS.map((t) => h("a", { href: href("queue", { id, tab: t.id }), "aria-current": t.id === current ? "page" : false }, t.title)),
  );
}

function summary(doc) {
  const rows = [
    ["Type", doc._type || ""],
    ["Id", h("code", {}, doc._id)],
    ["Created", `${formatDate(doc._created)} by ${doc._createdby || "?"}`],
    ["Modified", `${formatDate(doc._modified)} by ${doc._modifiedby || "?"}`],
  ];
  return h("dl", { class: "summary" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

registerPage({
  id: "queue",
  title: "Queue",
  nav: false,
  parent: "queues",
  async render(ctx) {
    const { api, params } = ctx;
    const id = params.get("id");
    const tab = params.get("tab") || "doc";
    const back = link("queues", {}, "← Queues");
    const reply = await api.call("query", { collectionname: "mq", query: { _id: id }, top: 1 });
    const doc = (reply.result || [])[0];
    if (!doc) {
      ctx.heading("Queue");
      ctx.main.append(h("p", {}, back), h("p", { class: "status error", role: "alert" }, `No queue or exchange ${id} that you may read.`));
      return;
    }
    if (doc._type === "workitemqueue") {
      ctx.navigate("workitemqueue", { id });
      return;
    }
    ctx.heading(`${doc._type === "exchange" ? "Exchange" : "Queue"} ${doc.name}`);
    ctx.main.append(h("p", {}, back), tabs(id, tab));
    if (tab === "acl") {
      ctx.main.append(
        h("p", { class: "muted" }, "Read lets a user consume from this name and send to it (update and invoke when the server is configured to need them)."),
        aclEditor(api, doc._acl, async (acl) => {
          const saved = await api.call("updateone", { collectionname: "mq", item: { ...doc, _acl: acl } });
          Object.assign(doc, saved.result);
          return saved.result._acl;
        }),
      );
      return;
    }
    const status = statusLine();
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", () => {
      if (!window.confirm(`Delete the claim on ${doc.name}? Anyone may then register the name again.`)) return;
      run(remove, status, async () => {
        await api.call("deleteone", { collectionname: "mq", id: doc._id });
        ctx.navigate("queues");
      });
    });
    ctx.main.append(
      summary(doc),
      h("h2", {}, "Document"),
      h("pre", { class: "json", tabindex: "0", "aria-label": "document" }, pretty(doc)),
      h("div", { class: "actions" }, remove),
      status,
    );
  },
});
