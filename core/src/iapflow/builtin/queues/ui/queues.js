// Queues and exchanges: the names claimed in the `mq` collection (docs/queues.md). The list
// holds what the signed-in user may read, filtered by name and type, and follows changes live
// through a watch; each entry opens on the "queue" page (queue.js).
import { registerPage } from "../../registry.js";
import { escapeRegex, field, followLive, formatDate, h, link, pager, reload, setContent, statusLine, table } from "../../ui.js";

const TOP = 25;

export const MQ_TYPES = [
  { value: "", title: "Any type" },
  { value: "queue", title: "Queue" },
  { value: "exchange", title: "Exchange" },
  { value: "workitemqueue", title: "Work item queue" },
];

/** The link that opens an `mq` document: work item queues have their own page. */
export function mqLink(doc) {
  if (doc._type === "workitemqueue") return link("workitemqueue", { id: doc._id }, doc.name || doc._id);
  return link("queue", { id: doc._id }, doc.name || doc._id);
}

registerPage({
  id: "queues",
  title: "Queues",
  order: 40,
  async render(ctx) {
    const { api, params } = ctx;
    const name = params.get("name") || "";
    const type = params.get("type") || "";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Queues and exchanges");
    const status = statusLine();

    const nameInput = h("input", { type: "search", name: "name", value: name, autocomplete: "off" });
    const typeSelect = h(
      "select",
      { name: "type" },
      MQ_TYPES.map((t) => h("option", { value: t.value, selected: t.value === type }, t.title)),
    );
    const filterButton = h("button", { type: "submit", class: "primary" }, "Filter");
    const form = h(
      "form",
      { class: "card" },
      h(
        "div",
        { class: "row" },
        h("div", { class: "grow" }, field("Name contains", nameInput).row),
        field("Type", typeSelect).row,
        filterButton,
      ),
      h(
        "p",
        { class: "muted" },
        "A queue or exchange is listed here once a client registers its name (registerqueue, registerexchange); " +
          "its ACL says who may consume from it and send to it.",
      ),
    );
    const go = (newSkip) =>
      ctx.navigate("queues", { name: nameInput.value.trim(), type: typeSelect.value, skip: newSkip || undefined });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      go(0);
    });
    typeSelect.addEventListener("change", () => go(0));
    const live = h("p", { class: "live", "aria-live": "off" });
    const results = h("div", { class: "results" });
    ctx.main.append(form, status, live, results);

    const query = {};
    if (type) query._type = type;
    if (name) query.name = { $regex: escapeRegex(name), $options: "i" };

    async function load() {
      await reload(status, async () => {
        const [page, count] = await Promise.all([
          api.call("query", { collectionname: "mq", query, top: TOP, skip, orderby: { name: 1 } }),
          api.call("count", { collectionname: "mq", query }),
        ]);
        const docs = page.result || [];
        setContent(
          results,
          table(
            [
              { title: "Name", cell: mqLink },
              { title: "Type", cell: (d) => d._type || "" },
              { title: "Created", cell: (d) => formatDate(d._created) },
              { title: "By", cell: (d) => d._createdby || "" },
              { title: "Id", cell: (d) => h("code", {}, d._id) },
            ],
            docs,
            `mq: ${count.result} name${count.result === 1 ? "" : "s"} you may read`,
          ),
          pager({ skip, top: TOP, count: count.result, shown: docs.length }, go),
        );
      });
    }
    await load();

    await followLive(ctx, live, "mq", load);
  },
});
