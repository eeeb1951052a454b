// One work item queue: its items by state (live through a watch), adding an item with a JSON
// payload, resubmitting and deleting items; its settings, purge and delete; its ACL, which the
// server copies onto every item (updateworkitemqueue).
import { aclEditor } from "../../acl.js";
import { registerPage } from "../../registry.js";
import { field, followLive, formatDate, h, href, link, pager, parseJson, reload, run, setContent, statusLine, table } from "../../ui.js";
import { numbers, STATES } from "./workitems.js";

const TOP = 25;
const TABS = [
  { id: "items", title: "Items" },
  { id: "settings", title: "Settings" },
  { id: "acl", title: "ACL" },
];

function tabs(id, current) {
  return h(
    "nav",
    { class: "tabs", "aria-label": "queue views" },
    TABS.map((t) =>
      h("a", { href: href("workitemqueue", { id, tab: t.id }), "aria-current": t.id === current ? "page" : false }, t.title),
    ),
  );
}

/** Put an item back to `new` (updateworkitem); it can be popped again at once. */
export function resubmitButton(api, item, status, done) {
  const button = h("button", { type: "button", "aria-label": `Resubmit ${item.name}` }, "Resubmit");
  button.addEventListener("click", () =>
    run(button, status, async () => {
      const reply = await api.call("updateworkitem", { _id: item._id, state: "new" });
      status.show(`${reply.result.name} is new again.`, "ok");
      await done(reply.result);
    }),
  );
  return button;
}

/** Delete an item (deleteworkitem) after a confirmation. */
export function deleteItemButton(api, item, status, done) {
  const button = h("button", { type: "button", class: "danger", "aria-label": `Delete ${item.name}` }, "Delete");
  button.addEventListener("click", () => {
    if (!window.confirm(`Delete work item ${item.name} and its files?`)) return;
    run(button, status, async () => {
      await api.call("deleteworkitem", { _id: item._id });
      status.show(`Deleted ${item.name}.`, "ok");
      await done();
    });
  });
  return button;
}

function addItemForm(api, queue, status, done) {
  const name = h("input", { name: "itemname", autocomplete: "off" });
  const priority = h("input", { name: "priority", type: "number", value: "2" });
  const payload = h("textarea", { class: "filter", name: "payload", spellcheck: "false", placeholder: '{"invoice": 42}' });
  const add = h("button", { type: "submit", class: "primary" }, "Add item");
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Add an item"),
    h("div", { class: "row" }, h("div", { class: "grow" }, field("Item name", name).row), field("Priority", priority, "lower runs sooner").row),
    field("Payload (JSON)", payload).row,
    h("div", { class: "actions" }, add),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(add, status, async () => {
      const data = { wiqid: queue._id, payload: parseJson(payload.value, "Payload"), ...numbers({ priority }) };
      if (name.value.trim()) data.name = name.value.trim();
      const reply = await api.call("pushworkitem", data);
      status.show(`Added ${reply.result.name}.`, "ok");
      name.value = "";
      payload.value = "";
      await done();
    });
  });
  return form;
}

async function itemsTab(ctx, queue) {
  const { api, params } = ctx;
  const state = params.get("state") || "";
  const skip = Math.max(0, Number(params.get("skip")) || 0);
  const status = statusLine();
  const stateSelect = h(
    "select",
    { name: "state" },
    h("option", { value: "" }, "Any state"),
    STATES.map((s) => h("option", { value: s, selected: s === state }, s)),
  );
  const go = (newSkip) =>
    ctx.navigate("workitemqueue", { id: queue._id, state: stateSelect.value, skip: newSkip || undefined });
  stateSelect.addEventListener("change", () => go(0));
  const live = h("p", { class: "live", "aria-live": "off" });
  const results = h("div", { class: "results" });
  const query = { wiqid: queue._id };
  if (state) query.state = state;

  async function load() {
    await reload(status, async () => {
      const [page, count] = await Promise.all([
        api.call("query", { collectionname: "workitems", query, top: TOP, skip, orderby: { _created: -1 } }),
        api.call("count", { collectionname: "workitems", query }),
      ]);
      const items = page.result || [];
      const actions = (item) =>
        h(
          "span",
          { class: "actions inline" },
          item.state !== "new" ? resubmitButton(api, item, status, load) : null,
          deleteItemButton(api, item, status, load),
        );
      setContent(
        results,
        table(
          [
            { title: "Item", cell: (i) => link("workitem", { id: i._id }, i.name || i._id) },
            { title: "State", cell: (i) => h("span", { class: `state ${i.state}` }, i.state) },
            { title: "Priority", cell: (i) => String(i.priority ?? "") },
            { title: "Retries", cell: (i) => String(i.retries || 0) },
            { title: "Last run", cell: (i) => formatDate(i.lastrun) },
            { title: "Error", cell: (i) => i.errormessage || "" },
            { title: "", cell: actions },
          ],
          items,
          `${count.result} item${count.result === 1 ? "" : "s"}${state ? ` in state ${state}` : ""}`,
        ),
        pager({ skip, top: TOP, count: count.result, shown: items.length }, go),
      );
    });
  }

  ctx.main.append(
    h("div", { class: "row" }, field("State", stateSelect).row),
    status,
    live,
    results,
    addItemForm(api, queue, status, load),
  );
  await load();

  await followLive(ctx, live, "workitems", load, { aggregates: [{ $match: { wiqid: queue._id } }] });
}

function settingsTab(ctx, queue) {
  const { api } = ctx;
  const status = statusLine();
  const input = (key, attrs = {}) => h("input", { name: key, value: queue[key] ?? "", autocomplete: "off", ...attrs });
  const name = input("name", { required: true });
  const maxretries = input("maxretries", { type: "number", min: "1" });
  const retrydelay = input("retrydelay", { type: "number", min: "0" });
  const initialdelay = input("initialdelay", { type: "number", min: "0" });
  const amqpqueue = input("amqpqueue");
  const successWiq = input("success_wiq");
  const failedWiq = input("failed_wiq");
  const save = h("button", { type: "submit", class: "primary" }, "Save settings");
  const form = h(
    "form",
    { class: "card" },
    h("div", { class: "row" }, h("div", { class: "grow" }, field("Queue name", name).row)),
    h(
      "div",
      { class: "row" },
      field("Max retries", maxretries).row,
      field("Retry delay (s)", retrydelay).row,
      field("Initial delay (s)", initialdelay).row,
    ),
    field("Message queue to nudge", amqpqueue).row,
    h("div", { class: "row" }, field("Copy finished items to queue", successWiq).row, field("Copy failed items to queue", failedWiq).row),
    h("div", { class: "actions" }, save),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(save, status, async () => {
      const data = { _id: queue._id, name: name.value.trim(), ...numbers({ maxretries, retrydelay, initialdelay }) };
      data.amqpqueue = amqpqueue.value.trim();
      if (successWiq.value.trim()) data.success_wiq = successWiq.value.trim();
      if (failedWiq.value.trim()) data.failed_wiq = failedWiq.value.trim();
      const reply = await api.call("updateworkitemqueue", data);
      Object.assign(queue, reply.result);
      ctx.main.querySelector("h1").textContent = `Work item queue ${queue.name}`;
      status.show("Settings saved.", "ok");
    });
  });

  const purge = h("button", { type: "button", class: "danger" }, "Purge items");
  purge.addEventListener("click", () => {
    if (!window.confirm(`Delete every item of ${queue.name} and their files? The queue stays.`)) return;
    run(purge, status, async () => {
      await api.call("updateworkitemqueue", { _id: queue._id, purge: true });
      status.show(`Purged ${queue.name}: it holds no items now.`, "ok");
    });
  });
  const withItems = h("input", { type: "checkbox", name: "withitems" });
  const remove = h("button", { type: "button", class: "danger" }, "Delete queue");
  remove.addEventListener("click", () => {
    const what = withItems.checked ? `${queue.name}, its items and its users role` : `${queue.name} and its users role`;
    if (!window.confirm(`Delete ${what}?`)) return;
    run(remove, status, async () => {
      await api.call("deleteworkitemqueue", { _id: queue._id, purge: withItems.checked });
      ctx.navigate("workitems");
    });
  });
  const danger = h(
    "div",
    { class: "card" },
    h("h2", {}, "Purge or delete"),
    h("div", { class: "actions" }, purge),
    h("div", { class: "actions" }, h("label", {}, withItems, " Also delete its items"), remove),
  );
  ctx.main.append(form, status, danger);
}

registerPage({
  id: "workitemqueue",
  title: "Work item queue",
  nav: false,
  parent: "workitems",
  async render(ctx) {
    const { api, params } = ctx;
    const id = params.get("id");
    const tab = params.get("tab") || "items";
    const back = link("workitems", {}, "← Work item queues");
    let queue;
    try {
      queue = (await api.call("getworkitemqueue", { _id: id })).result;
    } catch (err) {
      ctx.heading("Work item queue");
      ctx.main.append(h("p", {}, back), h("p", { class: "status error", role: "alert" }, err.message));
      return;
    }
    ctx.heading(`Work item queue ${queue.name}`);
    ctx.main.append(
      h("p", {}, back, " · ", h("code", {}, queue._id), queue.usersrole ? ` · users role ${queue.name} users` : ""),
      tabs(id, tab),
    );
    if (params.get("created")) ctx.main.append(h("p", { class: "status ok", role: "status" }, "Queue added."));
    if (tab === "settings") settingsTab(ctx, queue);
    else if (tab === "acl") {
      ctx.main.append(
        h("p", { class: "muted" }, "Working on items needs the invoke right; the server copies this ACL onto every item of the queue."),
        aclEditor(api, queue._acl, async (acl) => {
          const reply = await api.call("updateworkitemqueue", { _id: queue._id, _acl: acl });
          Object.assign(queue, reply.result);
          return reply.result._acl;
        }),
      );
    } else await itemsTab(ctx, queue);
  },
});
