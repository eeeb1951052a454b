// One user or role: details, disable, reset password (users); members (roles); the roles it
// belongs to. Every change is an updateone on `users`, so the server's rules decide.
import { principalSearch } from "../../acl.js";
import { registerPage } from "../../registry.js";
import { field, formatDate, h, href, link, run, setContent, statusLine, table } from "../../ui.js";
import { readDocument } from "../documents/entity.js";

async function save(api, item) {
  const reply = await api.call("updateone", { collectionname: "users", item });
  return reply.result;
}

function detailsForm(ctx, doc) {
  const status = statusLine();
  const name = h("input", { name: "name", value: doc.name || "" });
  const email = h("input", { name: "email", type: "email", value: doc.email || "" });
  const disabled = h("input", { type: "checkbox", name: "disabled", checked: Boolean(doc.disabled) });
  const button = h("button", { type: "submit", class: "primary" }, "Save");
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Details"),
    h("p", {}, "Username: ", h("strong", {}, doc.username || "")),
    h("div", { class: "row" }, field("Name", name).row, field("E-mail", email).row),
    h("div", { class: "field" }, h("label", {}, disabled, " Disabled (cannot sign in; open connections are closed)")),
    button,
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, status, async () => {
      const item = { ...doc, name: name.value, email: email.value };
      // only admins may change `disabled`: send it only when it is changed
      if (disabled.checked !== Boolean(doc.disabled)) item.disabled = disabled.checked;
      const stored = await save(ctx.api, item);
      Object.assign(doc, stored);
      status.show("Saved.", "ok");
    });
  });
  return form;
}

function passwordForm(ctx, doc) {
  const status = statusLine();
  const password = h("input", { type: "password", name: "newpassword", autocomplete: "new-password", required: true });
  const button = h("button", { type: "submit" }, "Set password");
  const form = h("form", { class: "card" }, h("h2", {}, "Reset password"), field("New password", password).row, button, status);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(button, status, async () => {
      const stored = await save(ctx.api, { ...doc, newpassword: password.value });
      Object.assign(doc, stored);
      password.value = "";
      status.show("Password set.", "ok");
    });
  });
  return form;
}

function membersEditor(ctx, doc) {
  const status = statusLine();
  let members = (doc.members || []).map((m) => ({ _id: m._id, name: m.name }));
  const holder = h("div", {});
  const draw = () =>
    setContent(
      holder,
      table(
        [
          { title: "Member", cell: (m) => link("user", { id: m._id }, m.name || m._id) },
          {
            title: "",
            cell: (m) =>
              h(
                "button",
                {
                  type: "button",
                  class: "danger",
                  onclick: () => {
                    members = members.filter((x) => x !== m);
                    draw();
                  },
                },
                `Remove ${m.name || m._id}`,
              ),
          },
        ],
        members,
        `${members.length} member${members.length === 1 ? "" : "s"}`,
      ),
    );
  const button = h("button", { type: "button", class: "primary" }, "Save members");
  button.addEventListener("click", () =>
    run(button, status, async () => {
      const stored = await save(ctx.api, { ...doc, members });
      Object.assign(doc, stored);
      members = (stored.members || []).map((m) => ({ _id: m._id, name: m.name }));
      draw();
      status.show("Members saved.", "ok");
    }),
  );
  draw();
  const search = principalSearch(
    ctx.api,
    (p) => {
      if (!members.some((m) => m._id === p._id)) members.push({ _id: p._id, name: p.name || p.username });
      draw();
    },
    "Add member",
  );
  return h("section", { class: "card" }, h("h2", {}, "Members"), holder, search, h("div", { class: "actions" }, button), status);
}

function impersonateForm(ctx, doc) {
  const status = statusLine();
  const button = h("button", { type: "button" }, `Sign in as ${doc.username}`);
  button.addEventListener("click", () =>
    run(button, status, async () => {
      await ctx.api.impersonate(doc._id);
      ctx.navigate(ctx.home());
    }),
  );
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Impersonate"),
    h("p", { class: "muted" }, "Act as this user until you stop; the server needs update right on the user and audits it."),
    button,
    status,
  );
}

async function memberOf(ctx, doc) {
  const reply = await ctx.api.call("query", {
    collectionname: "users",
    query: { _type: "role", "members._id": doc._id },
    projection: { name: 1 },
    orderby: { name: 1 },
    top: 500,
  });
  const roles = reply.result || [];
  return h(
    "section",
    { class: "card" },
    h("h2", {}, "Member of"),
    roles.length
      ? h("ul", {}, roles.map((r) => h("li", {}, link("user", { id: r._id }, r.name))))
      : h("p", { class: "muted" }, "No role you may see lists it as a member."),
  );
}

registerPage({
  id: "user",
  title: "User or role",
  nav: false,
  parent: "users",
  async render(ctx) {
    const doc = await readDocument(ctx.api, "users", ctx.params.get("id"));
    const back = link("users", {}, "← Users and roles");
    if (!doc) {
      ctx.heading("User or role");
      ctx.main.append(h("p", {}, back), h("p", { class: "status error", role: "alert" }, `No user or role ${ctx.params.get("id")} that you may read.`));
      return;
    }
    ctx.heading(`${doc.name || doc.username} (${doc._type})`);
    ctx.main.append(
      h(
        "p",
        {},
        doc._type === "role" ? link("users", { type: "role" }, "← Roles") : back,
        " · ",
        h("code", {}, doc._id),
        " · ",
        h("a", { href: href("entity", { c: "users", id: doc._id, tab: "acl" }) }, "ACL"),
        " · ",
        h("a", { href: href("entity", { c: "users", id: doc._id, tab: "history" }) }, "History"),
        doc.lastseen ? ` · last seen ${formatDate(doc.lastseen)}` : "",
      ),
    );
    if (doc._type === "user") {
      ctx.main.append(detailsForm(ctx, doc), passwordForm(ctx, doc));
      if (doc._id !== ctx.api.user._id) ctx.main.append(impersonateForm(ctx, doc));
    } else if (doc._type === "role") {
      ctx.main.append(membersEditor(ctx, doc));
    }
    ctx.main.append(await memberOf(ctx, doc));
  },
});
