// Users and roles (both live in the `users` collection): list, search, create.
import { registerPage } from "../../registry.js";
import { escapeRegex, field, formatDate, h, href, link, pager, run, setContent, statusLine, table } from "../../ui.js";

const TOP = 25;

function createForm(ctx, type, status) {
  const inputs =
    type === "user"
      ? {
          username: h("input", { name: "username", autocomplete: "off", required: true }),
          name: h("input", { name: "name", autocomplete: "off" }),
          email: h("input", { name: "email", type: "email", autocomplete: "off" }),
          newpassword: h("input", { name: "newpassword", type: "password", autocomplete: "new-password", required: true }),
        }
      : { name: h("input", { name: "name", autocomplete: "off", required: true }) };
  const labels = { username: "Username", name: "Name", email: "E-mail", newpassword: "Password" };
  const button = h("button", { type: "submit", class: "primary" }, type === "user" ? "Create user" : "Create role");
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, type === "user" ? "New user" : "New role"),
    h("div", { class: "row" }, Object.entries(inputs).map(([key, input]) => field(labels[key], input).row)),
    button,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, status, async () => {
      const item = { _type: type };
      for (const [key, input] of Object.entries(inputs)) if (input.value) item[key] = input.value;
      if (type === "role") item.members = [];
      const reply = await ctx.api.call("insertone", { collectionname: "users", item });
      ctx.navigate("user", { id: reply.result._id });
    });
  });
  return form;
}

registerPage({
  id: "users",
  title: "Users and roles",
  order: 20,
  async render(ctx) {
    const { api, params } = ctx;
    const type = params.get("type") === "role" ? "role" : "user";
    const search = params.get("q") || "";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Users and roles");
    const status = statusLine();
    const tabs = h(
      "nav",
      { class: "tabs", "aria-label": "users or roles" },
      [
        ["user", "Users"],
        ["role", "Roles"],
      ].map(([t, title]) => h("a", { href: href("users", { type: t }), "aria-current": t === type ? "page" : false }, title)),
    );
    const input = h("input", { type: "search", name: "q", value: search });
    const find = h("button", { type: "submit" }, "Search");
    const searchForm = h("form", { class: "row" }, h("div", { class: "field grow" }, h("label", { for: "users-q" }, "Search by name"), input), find);
    input.id = "users-q";
    searchForm.addEventListener("submit", (event) => {
      event.preventDefault();
      ctx.navigate("users", { type, q: input.value.trim() });
    });
    const list = h("div", {});
    ctx.main.append(tabs, searchForm, status, list, createForm(ctx, type, status));

    const query = { _type: type };
    if (search) {
      const pattern = { $regex: escapeRegex(search), $options: "i" };
      query.$or = [{ name: pattern }, { username: pattern }];
    }
    try {
      const [reply, count] = await Promise.all([
        api.call("query", { collectionname: "users", query, top: TOP, skip, orderby: { name: 1 } }),
        api.call("count", { collectionname: "users", query }),
      ]);
      const docs = reply.result || [];
      const columns =
        type === "user"
          ? [
              { title: "Name", cell: (d) => link("user", { id: d._id }, d.name || d.username) },
              { title: "Username", cell: (d) => d.username || "" },
              { title: "E-mail", cell: (d) => d.email || "" },
              { title: "Disabled", cell: (d) => (d.disabled ? "yes" : "") },
              { title: "Last seen", cell: (d) => formatDate(d.lastseen || d._heartbeat) },
            ]
          : [
              { title: "Name", cell: (d) => link("user", { id: d._id }, d.name) },
              { title: "Members", cell: (d) => String((d.members || []).length) },
              { title: "Id", cell: (d) => h("code", {}, d._id) },
            ];
      setContent(
        list,
        table(columns, docs, `${count.result} ${type === "user" ? "users" : "roles"} you may see`),
        pager({ skip, top: TOP, count: count.result, shown: docs.length }, (s) => ctx.navigate("users", { type, q: search, skip: s || undefined })),
      );
    } catch (err) {
      status.error(err);
    }
  },
});
