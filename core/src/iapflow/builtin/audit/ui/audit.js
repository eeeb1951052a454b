// The audit log (`audit`): sign-ins good and bad, impersonation, collection changes, killed
// clients. Admins see every entry; other users only the entries about themselves.
import { registerPage } from "../../registry.js";
import { escapeRegex, field, formatDate, h, pager, setContent, statusLine, table } from "../../ui.js";

const TOP = 50;
const TYPES = ["", "signin", "impersonate", "collection", "killwebsocketclient", "nodered", "workitemqueue"];

function outcome(entry) {
  if (entry._type !== "signin") return "";
  return entry.success ? "ok" : `failed${entry.reason ? `: ${entry.reason}` : ""}`;
}

registerPage({
  id: "audit",
  title: "Audit log",
  order: 80,
  async render(ctx) {
    const { api, params } = ctx;
    const type = params.get("type") || "";
    const failed = params.get("failed") === "1";
    const who = params.get("user") || "";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Audit log");
    const status = statusLine();
    const typeSelect = h("select", { name: "type" }, TYPES.map((t) => h("option", { value: t, selected: t === type }, t || "all")));
    const failedBox = h("input", { type: "checkbox", name: "failed", checked: failed });
    const userInput = h("input", { type: "search", name: "user", value: who });
    const apply = h("button", { type: "submit", class: "primary" }, "Show");
    const form = h(
      "form",
      { class: "row card" },
      field("Type", typeSelect).row,
      field("Username", userInput).row,
      h("div", { class: "field" }, h("label", {}, failedBox, " Failed sign-ins only")),
      apply,
    );
    const go = (s) =>
      ctx.navigate("audit", { type: typeSelect.value, failed: failedBox.checked ? "1" : "", user: userInput.value.trim(), skip: s || undefined });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      go(0);
    });
    const live = h("p", { class: "live" });
    const list = h("div", {});
    ctx.main.append(form, status, live, list);

    const query = {};
    if (type) query._type = type;
    if (failed) Object.assign(query, { _type: "signin", success: false });
    if (who) query.username = { $regex: escapeRegex(who), $options: "i" };
    async function load() {
      const [reply, count] = await Promise.all([
        api.call("query", { collectionname: "audit", query, top: TOP, skip, orderby: { _created: -1 } }),
        api.call("count", { collectionname: "audit", query }),
      ]);
      const entries = reply.result || [];
      setContent(
        list,
        table(
          [
            { title: "When", cell: (e) => formatDate(e._created) },
            { title: "Type", cell: (e) => e._type },
            { title: "What", cell: (e) => e.name || "" },
            { title: "User", cell: (e) => e.username || e._createdby || "" },
            { title: "Outcome", cell: outcome },
            { title: "From", cell: (e) => [e.remoteip, e.clientagent].filter(Boolean).join(" · ") },
          ],
          entries,
          `${count.result} entr${count.result === 1 ? "y" : "ies"} you may read`,
        ),
        pager({ skip, top: TOP, count: count.result, shown: entries.length }, go),
      );
    }
    try {
      await load();
    } catch (err) {
      status.error(err);
      return;
    }
    try {
      const stop = await api.watch("audit", () => load().catch((err) => status.error(err)));
      live.textContent = "New entries appear live.";
      ctx.onLeave(stop);
    } catch {
      live.textContent = "";
    }
  },
});
