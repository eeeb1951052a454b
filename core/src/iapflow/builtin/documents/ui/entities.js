// Entities: pick a collection, filter with a MongoDB query, page through the documents the
// signed-in user may read; the list follows changes live through a watch.
import { registerPage } from "../../registry.js";
import { field, followLive, formatDate, h, href, link, pager, parseJson, run, setContent, statusLine, table } from "../../ui.js";

export const PAGE_SIZES = [25, 50, 100, 500];

/** The collection names the user may list, for a <select>. */
export async function collectionOptions(api, selected) {
  const reply = await api.call("listcollections", {});
  const names = (reply.result || []).map((c) => c.name);
  if (selected && !names.includes(selected)) names.unshift(selected);
  return names.map((name) => h("option", { value: name, selected: name === selected }, name));
}

/** A short label for a document of any collection. */
export function label(doc) {
  return doc.name || doc.username || doc.filename || doc._id;
}

registerPage({
  id: "entities",
  title: "Entities",
  order: 10,
  async render(ctx) {
    const { api, params } = ctx;
    const collection = params.get("c") || "entities";
    const filterText = params.get("q") || "";
    const top = Number(params.get("top")) || 25;
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Entities");
    const status = statusLine();

    const select = h("select", { name: "collection" });
    const filter = h("textarea", { class: "filter", name: "filter", spellcheck: "false", placeholder: '{"_type": "pump"}' }, filterText);
    const size = h("select", { name: "top" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === top }, String(n))));
    const queryButton = h("button", { type: "submit", class: "primary" }, "Query");
    const form = h(
      "form",
      { class: "card" },
      h("div", { class: "row" }, field("Collection", select).row, field("Page size", size).row),
      field("Filter (JSON)", filter, "A MongoDB filter; empty means every document you may read.").row,
      h(
        "div",
        { class: "actions" },
        queryButton,
        h("a", { class: "button", href: href("entity", { c: collection, new: "1" }) }, "New document"),
        h("a", { class: "button", href: href("deleted", { c: collection }) }, "Deleted documents"),
      ),
    );
    const go = (newSkip) =>
      ctx.navigate("entities", { c: select.value || collection, q: filter.value.trim(), top: size.value, skip: newSkip || undefined });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(queryButton, status, async () => {
        parseJson(filter.value, "Filter");
        go(0);
      });
    });
    select.addEventListener("change", () => {
      filter.value = "";
      go(0);
    });
    const live = h("p", { class: "live", "aria-live": "off" });
    const results = h("div", { class: "results" });
    ctx.main.append(form, status, live, results);

    try {
      setContent(select, await collectionOptions(api, collection));
    } catch (err) {
      status.error(err);
    }

    let query;
    try {
      query = parseJson(filterText, "Filter");
    } catch (err) {
      status.error(err);
      return;
    }

    async function load() {
      try {
        const [page, count] = await Promise.all([
          api.call("query", { collectionname: collection, query, top, skip, orderby: { _id: -1 } }),
          api.call("count", { collectionname: collection, query }),
        ]);
        const docs = page.result || [];
        setContent(
          results,
          table(
            [
              { title: "Name", cell: (d) => link("entity", { c: collection, id: d._id }, String(label(d))) },
              { title: "Type", cell: (d) => d._type || "" },
              { title: "Id", cell: (d) => h("code", {}, d._id) },
              { title: "Modified", cell: (d) => formatDate(d._modified || d.uploadDate) },
              { title: "By", cell: (d) => d._modifiedby || "" },
            ],
            docs,
            `${collection}: ${count.result} document${count.result === 1 ? "" : "s"}`,
          ),
          pager({ skip, top, count: count.result, shown: docs.length }, go),
        );
      } catch (err) {
        status.error(err);
      }
    }
    await load();

    await followLive(ctx, live, collection, load);
  },
});
