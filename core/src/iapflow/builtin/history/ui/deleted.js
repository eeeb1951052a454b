// Deleted documents of a collection (getdeleteddocuments), newest first, and restoring one
// (restoredocument): it comes back with its id and ACL as a new version.
import { registerPage } from "../../registry.js";
import { field, formatDate, h, link, pager, run, setContent, statusLine, table } from "../../ui.js";
import { collectionOptions, label } from "../documents/entities.js";

const TOP = 25;

registerPage({
  id: "deleted",
  title: "Deleted documents",
  nav: false,
  parent: "entities",
  async render(ctx) {
    const { api, params } = ctx;
    const collection = params.get("c") || "entities";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Deleted documents");
    const status = statusLine();
    const select = h("select", { name: "collection" });
    select.addEventListener("change", () => ctx.navigate("deleted", { c: select.value }));
    const list = h("div", {});
    ctx.main.append(
      h("p", {}, link("entities", { c: collection }, `← ${collection}`)),
      h("div", { class: "row" }, field("Collection", select).row),
      status,
      list,
    );
    try {
      setContent(select, await collectionOptions(api, collection));
    } catch (err) {
      status.error(err);
    }
    async function load() {
      const reply = await api.call("getdeleteddocuments", { collectionname: collection, top: TOP, skip });
      const docs = reply.result || [];
      const restore = (doc) => {
        const button = h("button", { type: "button", "aria-label": `Restore ${label(doc)}` }, "Restore");
        button.addEventListener("click", () =>
          run(button, status, async () => {
            const restored = await api.call("restoredocument", { collectionname: collection, id: doc._id });
            status.show(`Restored ${label(restored.result)} as version ${restored.result._version}.`, "ok");
            await load();
          }),
        );
        return button;
      };
      setContent(
        list,
        table(
          [
            { title: "Name", cell: (d) => String(label(d)) },
            { title: "Type", cell: (d) => d._type || "" },
            { title: "Id", cell: (d) => h("code", {}, d._id) },
            { title: "Deleted", cell: (d) => formatDate(d._deleted) },
            { title: "By", cell: (d) => d._deletedby || "" },
            { title: "", cell: restore },
          ],
          docs,
          `Deleted from ${collection}, newest first`,
        ),
        pager({ skip, top: TOP, shown: docs.length }, (s) => ctx.navigate("deleted", { c: collection, skip: s || undefined })),
      );
    }
    try {
      await load();
    } catch (err) {
      status.error(err);
    }
  },
});
