// One work item: its state, error and files, the whole document as JSON, editing its payload,
// resubmitting it (state new) and deleting it.
import { registerPage } from "../../registry.js";
import { field, formatDate, h, link, parseJson, pretty, run, saveDownload, saveName, statusLine } from "../../ui.js";
import { deleteItemButton, resubmitButton } from "./workitemqueue.js";

/** A button that saves an attached file (see saveDownload). */
function downloadButton(api, file, status) {
  const name = saveName(file.filename || file.name);
  const button = h("button", { type: "button" }, `Download ${name}`);
  button.addEventListener("click", () => run(button, status, () => saveDownload(api, file._id, name)));
  return button;
}

function summary(api, item, status) {
  const rows = [
    ["State", h("span", { class: `state ${item.state}` }, item.state)],
    ["Priority", String(item.priority ?? "")],
    ["Retries", String(item.retries || 0)],
    ["Next run", formatDate(item.nextrun)],
    ["Last run", item.lastrun ? `${formatDate(item.lastrun)} by ${item.username || "?"}` : ""],
    ["Error", item.errormessage ? `${item.errortype || "application"}: ${item.errormessage}` : ""],
    ["Files", (item.files || []).map((f) => downloadButton(api, f, status))],
  ];
  return h(
    "dl",
    { class: "summary" },
    rows.filter(([, value]) => value !== "" && !(Array.isArray(value) && !value.length)).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

registerPage({
  id: "workitem",
  title: "Work item",
  nav: false,
  parent: "workitems",
  async render(ctx) {
    const { api, params } = ctx;
    const id = params.get("id");
    const reply = await api.call("query", { collectionname: "workitems", query: { _id: id }, top: 1 });
    const item = (reply.result || [])[0];
    if (!item) {
      ctx.heading("Work item");
      ctx.main.append(
        h("p", {}, link("workitems", {}, "← Work item queues")),
        h("p", { class: "status error", role: "alert" }, `No work item ${id} that you may read.`),
      );
      return;
    }
    ctx.heading(`Work item ${item.name}`);
    const status = statusLine();
    const back = link("workitemqueue", { id: item.wiqid }, `← ${item.wiq}`);
    const reload = () => ctx.navigate("workitem", { id: item._id, at: Date.now() });
    const payload = h("textarea", { class: "json", name: "payload", spellcheck: "false" }, pretty(item.payload || {}));
    const save = h("button", { type: "submit", class: "primary" }, "Save payload");
    const form = h("form", {}, field("Payload (JSON)", payload).row, h("div", { class: "actions" }, save));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(save, status, async () => {
        await api.call("updateworkitem", { _id: item._id, payload: parseJson(payload.value, "Payload") });
        reload();
      });
    });
    ctx.main.append(
      h("p", {}, back, " · ", h("code", {}, item._id)),
      summary(api, item, status),
      h(
        "div",
        { class: "actions" },
        item.state !== "new" ? resubmitButton(api, item, status, reload) : null,
        deleteItemButton(api, item, status, () => ctx.navigate("workitemqueue", { id: item.wiqid })),
      ),
      status,
      form,
      h("details", {}, h("summary", {}, "Whole document"), h("pre", { class: "json", tabindex: "0" }, pretty(item))),
    );
  },
});
