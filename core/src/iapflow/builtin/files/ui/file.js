// One file: its metadata, download, delete, and its ACL (metadata._acl, saved by updatefile).
import { aclEditor } from "../../acl.js";
import { registerPage } from "../../registry.js";
import { formatDate, h, link, pretty, run, statusLine } from "../../ui.js";
import { downloadButton, size } from "./files.js";

registerPage({
  id: "file",
  title: "File",
  nav: false,
  parent: "files",
  async render(ctx) {
    const { api, params } = ctx;
    const id = params.get("id");
    const back = link("files", {}, "← Files");
    const reply = await api.call("query", { collectionname: "files", query: { _id: id }, top: 1 });
    const file = (reply.result || [])[0];
    if (!file) {
      ctx.heading("File");
      ctx.main.append(h("p", {}, back), h("p", { class: "status error", role: "alert" }, `No file ${id} that you may read.`));
      return;
    }
    ctx.heading(file.filename);
    const status = statusLine();
    const remove = h("button", { type: "button", class: "danger" }, "Delete");
    remove.addEventListener("click", () => {
      if (!window.confirm(`Delete ${file.filename}?`)) return;
      run(remove, status, async () => {
        await api.call("deleteone", { collectionname: "files", id: file._id });
        ctx.navigate("files");
      });
    });
    const metadata = file.metadata || {};
    ctx.main.append(
      h("p", {}, back, " · ", h("code", {}, file._id)),
      h(
        "dl",
        { class: "card" },
        h("dt", {}, "Size"),
        h("dd", {}, size(file.length)),
        h("dt", {}, "Type"),
        h("dd", {}, file.contentType || metadata.contentType || ""),
        h("dt", {}, "Uploaded"),
        h("dd", {}, `${formatDate(file.uploadDate)} by ${metadata._createdby || "?"}`),
      ),
      h("div", { class: "actions" }, downloadButton(api, file, status), remove),
      status,
      h("h2", {}, "ACL"),
      aclEditor(api, metadata._acl, async (acl) => {
        const updated = await api.call("updatefile", { id: file._id, metadata: { ...metadata, _acl: acl } });
        Object.assign(metadata, updated.result.metadata || {});
        return (updated.result.metadata || {})._acl;
      }),
      h("details", {}, h("summary", {}, "Metadata as JSON"), h("pre", { class: "json" }, pretty(metadata))),
    );
  },
});
