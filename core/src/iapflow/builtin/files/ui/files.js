// Files: the GridFS files the user may read; upload (POST /upload), download
// (GET /download/<id>), both with the signed-in user's token in the Authorization header.
// The list follows changes live through a watch on fs.files.
import { registerPage } from "../../registry.js";
import {
  escapeRegex,
  field,
  followLive,
  formatDate,
  h,
  link,
  pager,
  run,
  saveDownload,
  saveName,
  setContent,
  statusLine,
  table,
} from "../../ui.js";

const TOP = 25;

export function size(bytes) {
  if (bytes === undefined || bytes === null) return "";
  const units = ["B", "KB", "MB", "GB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

/** A button that saves the file (errors are the server's). */
export function downloadButton(api, file, status) {
  const button = h("button", { type: "button", "aria-label": `Download ${saveName(file.filename)}` }, "Download");
  button.addEventListener("click", () => run(button, status, () => saveDownload(api, file._id, file.filename)));
  return button;
}

function uploadForm(ctx, status, done) {
  const input = h("input", { type: "file", name: "file", required: true });
  const privateBox = h("input", { type: "checkbox", name: "private" });
  const button = h("button", { type: "submit", class: "primary" }, "Upload");
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Upload"),
    field("File", input).row,
    h("div", { class: "field" }, h("label", {}, privateBox, " Only me and admins (otherwise every user may read it)")),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = input.files[0];
    if (!file) return;
    run(button, status, async () => {
      const query = new URLSearchParams({ filename: file.name });
      if (privateBox.checked) query.set("metadata", JSON.stringify({ _acl: [] }));
      const response = await ctx.api.http(`/upload?${query}`, {
        method: "POST",
        body: file,
        headers: { "Content-Type": file.type || "application/octet-stream" },
      });
      const stored = await response.json();
      status.show(`Uploaded ${stored.filename} (${size(stored.length)}).`, "ok");
      input.value = "";
      await done();
    });
  });
  return form;
}

registerPage({
  id: "files",
  title: "Files",
  order: 30,
  async render(ctx) {
    const { api, params } = ctx;
    const search = params.get("q") || "";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Files");
    const status = statusLine();
    const input = h("input", { type: "search", id: "files-q", value: search });
    const searchForm = h(
      "form",
      { class: "row" },
      h("div", { class: "field grow" }, h("label", { for: "files-q" }, "Search by file name"), input),
      h("button", { type: "submit" }, "Search"),
    );
    searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      ctx.navigate("files", { q: input.value.trim() });
    });
    const list = h("div", {});
    const query = search ? { filename: { $regex: escapeRegex(search), $options: "i" } } : {};
    async function load() {
      const [reply, count] = await Promise.all([
        api.call("query", { collectionname: "files", query, top: TOP, skip, orderby: { uploadDate: -1 } }),
        api.call("count", { collectionname: "files", query }),
      ]);
      const files = reply.result || [];
      setContent(
        list,
        table(
          [
            { title: "Name", cell: (f) => link("file", { id: f._id }, f.filename) },
            { title: "Size", cell: (f) => size(f.length) },
            { title: "Type", cell: (f) => f.contentType || (f.metadata || {}).contentType || "" },
            { title: "Uploaded", cell: (f) => formatDate(f.uploadDate) },
            { title: "By", cell: (f) => (f.metadata || {})._createdby || "" },
            { title: "", cell: (f) => downloadButton(api, f, status) },
          ],
          files,
          `${count.result} file${count.result === 1 ? "" : "s"} you may read`,
        ),
        pager({ skip, top: TOP, count: count.result, shown: files.length }, (s) => ctx.navigate("files", { q: search, skip: s || undefined })),
      );
    }
    const live = h("p", { class: "live" });
    ctx.main.append(uploadForm(ctx, status, load), searchForm, status, live, list);
    try {
      await load();
    } catch (err) {
      status.error(err);
      return;
    }
    await followLive(ctx, live, "fs.files", () => load().catch((err) => status.error(err)));
  },
});
